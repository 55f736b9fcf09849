package main

import (
	"flag"
	"strings"
	"time"

	"github.com/phantomvault/phantom/internal/sigv4"
)

// sigv4Token is a phantom token on an aws_sigv4 route to the same API and
// path as -route: the bench drives it beside the plain token, to show what
// signing each request again costs against pasting a key.
var sigv4Token = flag.String("sigv4-token", "", "a phantom token on an aws_sigv4 route (service s3) like -route's; with it, the bench adds the phantom-sigv4 target")

// sigv4Targets is the phantom-sigv4 target, when -sigv4-token is set. The
// agent's signature is the SDK's with any secret: the proxy does not read
// it, so one made-up Authorization stands for all.
func sigv4Targets(proxy string) []target {
	if *sigv4Token == "" {
		return nil
	}
	day := time.Now().UTC().Format(sigv4.DateFormat)
	auth := sigv4.Algorithm + " Credential=" + *sigv4Token + "/" + sigv4.Scope(day, "us-east-1", "s3") +
		", SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64)
	return []target{{"phantom-sigv4", proxy, auth, nil}}
}
