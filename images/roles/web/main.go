// Command web is Loom's sample web role. It runs inside a guest, listens
// on $PORT (reached from outside only through the host's ingress over the
// channel) and reads its settings from the guest agent's local endpoint
// ($LOOM_ENDPOINT/settings).
//
//	GET  /          "hello from INSTANCE: GREETING" (setting "greeting")
//	GET  /healthz   200 while healthy
//	GET  /bytes?n=N N bytes (for throughput measurements)
//	POST /sink      reads the body, answers its length
//	GET  /connect?service=S  asks the guest agent for a stream to the host's
//	                service S and answers what the host said
//	GET  /whoami    JSON: the instance (as the role and the guest agent know
//	                it), 16 bytes of /dev/urandom read at the role's start
//	                and 16 read now, and the guest's clock (Unix ns): what
//	                must differ between guests resumed from one snapshot
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func settings() map[string]string {
	m := map[string]string{}
	resp, err := http.Get(os.Getenv("LOOM_ENDPOINT") + "/settings")
	if err != nil {
		return m
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		log.Printf("settings: %v", err)
	}
	return m
}

var zeros = make([]byte, 1<<20)

// urandom is 16 bytes of /dev/urandom, in hex.
func urandom() string {
	f, err := os.Open("/dev/urandom")
	if err != nil {
		return "error: " + err.Error()
	}
	defer func() { _ = f.Close() }() // read only
	b := make([]byte, 16)
	if _, err := io.ReadFull(f, b); err != nil {
		return "error: " + err.Error()
	}
	return hex.EncodeToString(b)
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	instance := os.Getenv("LOOM_INSTANCE")
	atStart := urandom()
	http.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		agent := ""
		if resp, err := http.Get(os.Getenv("LOOM_ENDPOINT") + "/instance"); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			_ = resp.Body.Close()
			agent = strings.TrimSpace(string(b))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{ // a client that has gone is nobody to tell
			"instance": instance, "agentInstance": agent,
			"randomAtStart": atStart, "randomNow": urandom(), "timeUnixNano": time.Now().UnixNano(),
		})
	})
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		greeting := settings()["greeting"]
		if greeting == "" {
			greeting = "hello"
		}
		fmt.Fprintf(w, "hello from %s: %s\n", instance, greeting)
	})
	http.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	http.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(zeros)))
			if _, err := w.Write(zeros[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	http.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintln(w, n)
	})
	http.HandleFunc("GET /connect", func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Post(os.Getenv("LOOM_ENDPOINT")+"/connect/"+r.URL.Query().Get("service"), "", nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(b) // if the client has gone, there is nobody to tell
			return
		}
		fmt.Fprintln(w, "connected")
	})
	log.Printf("web role %s listening on :%s", instance, port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
