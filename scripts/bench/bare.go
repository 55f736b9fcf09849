package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
)

// startBareProxy starts what any reverse proxy costs, a ReverseProxy that
// injects a fixed key and asks no one, in a process of its own as
// phantom-proxy runs in its own: sharing the load generator's Go runtime
// would spare it the cross-process wakeups every real proxy pays.
func startBareProxy(upstream, realKeyEnv string) (string, func()) {
	return startChild("bare proxy", "-bare-proxy", "-upstream="+upstream, "-real-key-env="+realKeyEnv)
}

// startChild runs this program again with args, reads the URL it prints
// on its first line, and returns it with a function that stops it.
func startChild(what string, args ...string) (string, func()) {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		log.Fatalf("%s: %v", what, err)
	}
	return strings.TrimSpace(line), func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// serveBareProxy runs in the bare proxy's process: it prints its URL and
// serves until killed.
func serveBareProxy(upstream, key string) {
	u, err := url.Parse(upstream)
	if err != nil || key == "" {
		log.Fatalf("bare proxy: bad upstream %q or no key", upstream)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("Authorization", "Bearer "+key)
		},
		Transport: t,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	log.Fatal(http.Serve(ln, rp))
}
