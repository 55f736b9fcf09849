// Command demo-upstream is a stand-in API for the demo and `make dev`: it
// accepts only the real key, given in $DEMO_UPSTREAM_KEY (never a flag, so it
// stays out of process listings), and echoes rejected keys back as real APIs
// do, which lets the demo show phantom-proxy scrubbing them. It also takes
// requests signed with AWS SigV4 (service s3) by DemoAWSKeyID with that key
// as the secret, for an aws_sigv4 route in make bench.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/internal/sigv4/sigv4test"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9200", "address to serve on")
	flag.Parse()
	key := os.Getenv("DEMO_UPSTREAM_KEY")
	if key == "" {
		log.Fatal("demo-upstream: set DEMO_UPSTREAM_KEY to the key it should accept")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/customers", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": "cus_123", "name": "Ada Lovelace"},
			map[string]any{"id": "cus_456", "name": "Grace Hopper"},
		}})
	})
	mux.HandleFunc("GET /v1/customers/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"object": "customer", "id": r.PathValue("id")})
	})
	// Some APIs quote the key they received in debug output.
	mux.HandleFunc("GET /v1/debug/whoami", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"authorization": r.Header.Get("Authorization")})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, map[string]any{"error": map[string]any{"message": "no such endpoint"}})
	})
	log.Printf("demo-upstream: serving on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if strings.HasPrefix(got, sigv4.Algorithm) {
			if err := sigv4test.Verify(r, nil, demoAWSKeyID, key, "s3"); err != nil {
				reply(w, http.StatusForbidden, map[string]any{"error": map[string]any{"message": "SignatureDoesNotMatch: " + err.Error()}})
				return
			}
			got = key
		}
		if got != key {
			reply(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{"message": "Invalid API key provided: " + got}})
			return
		}
		mux.ServeHTTP(w, r)
	})))
}

// demoAWSKeyID is the access key id of the demo's aws_sigv4 route.
const demoAWSKeyID = "AKIADEMOUPSTREAM0001"

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
