// Command guestbook-web is the web role of Loom's sample service. It runs
// in a guest, listens on $PORT (reached through the service endpoint) and
// reaches its service's queues at the guest agent's local endpoint
// ($LOOM_ENDPOINT). It never sees a worker: it puts each entry on the
// "entries" queue, and shows the entries the worker role has processed
// onto the "book" queue (peeked, never taken).
//
//	POST /entries        body = the entry (≤ 1 KiB of text) → 202 "queued ID"
//	GET  /               the book as text, newest last, and what is queued
//	GET  /book.json      the same as JSON
//	GET  /healthz        200 while the queues answer
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/loomfabric/loom/images/services/guestbook/book"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	q := book.Queues{Endpoint: os.Getenv("LOOM_ENDPOINT")}
	q.Settings()
	instance := os.Getenv("LOOM_INSTANCE")

	http.HandleFunc("POST /entries", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, book.MaxEntry+1))
		text := strings.TrimSpace(string(b))
		switch {
		case err != nil:
			http.Error(w, "reading the entry: "+err.Error(), http.StatusBadRequest)
			return
		case len(b) > book.MaxEntry:
			http.Error(w, fmt.Sprintf("an entry holds at most %d bytes", book.MaxEntry), http.StatusRequestEntityTooLarge)
			return
		case text == "" || !utf8.ValidString(text):
			http.Error(w, "an entry is some UTF-8 text", http.StatusBadRequest)
			return
		}
		e := book.Entry{Text: text, Web: instance, At: time.Now().UTC()}
		id, err := q.Put(q.EntriesQueue, e)
		if err != nil {
			http.Error(w, "queueing the entry: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "queued %s (by web %s)\n", id, instance)
	})
	page := func(w http.ResponseWriter, asJSON bool) {
		done, err := q.Book()
		if err != nil {
			http.Error(w, "reading the book: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		waiting, err := q.Length(q.EntriesQueue)
		if err != nil {
			http.Error(w, "reading the queue: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if asJSON {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"web": instance, "waiting": waiting, "book": done}) // the client may have gone
			return
		}
		fmt.Fprintf(w, "guestbook (page served by web %s): %d entries, %d waiting for a worker\n", instance, len(done), waiting)
		for _, p := range done {
			fmt.Fprintf(w, "%s  %q → %s  [%d words, sha256 %s; web %s, worker %s]\n",
				p.At.Format(time.RFC3339), p.Text, p.Upper, p.Words, p.Sum, p.Web, p.Worker)
		}
	}
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { page(w, false) })
	http.HandleFunc("GET /book.json", func(w http.ResponseWriter, r *http.Request) { page(w, true) })
	http.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := q.Length(q.EntriesQueue); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	log.Printf("guestbook web %s listening on :%s (queues %s → %s)", instance, port, q.EntriesQueue, q.BookQueue)
	srv := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
