// Command guestbook-worker is the worker role of Loom's sample service: it
// takes entries from the "entries" queue, processes them (upper case, a
// word count, a digest, its own name) and puts the result on the "book"
// queue, which it keeps to the newest "keep" (setting; default 20). An
// entry is deleted from its queue only after its result is stored, so a
// worker that dies mid-way leaves it to another (at least once; the web
// role shows each entry once).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/images/services/guestbook/book"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	q := book.Queues{Endpoint: os.Getenv("LOOM_ENDPOINT")}
	q.Settings()
	instance := os.Getenv("LOOM_INSTANCE")
	log.Printf("guestbook worker %s: %s → %s, keeping %d", instance, q.EntriesQueue, q.BookQueue, q.Keep)
	idle := 200 * time.Millisecond
	for {
		select {
		case <-stop:
			log.Printf("guestbook worker %s: stopping", instance)
			return
		default:
		}
		n, err := work(&q, instance)
		if err != nil {
			log.Printf("guestbook worker %s: %v", instance, err)
		}
		if n == 0 || err != nil {
			time.Sleep(idle) // nothing there (or the host out of reach): look again soon
			idle = min(idle*2, 2*time.Second)
			continue
		}
		idle = 200 * time.Millisecond
	}
}

// work processes one entry, if one is waiting.
func work(q *book.Queues, instance string) (int, error) {
	msg, err := q.Get(q.EntriesQueue, time.Minute)
	if err != nil || msg == nil {
		return 0, err
	}
	e, err := book.Decode(msg.Body)
	if err != nil {
		// Not an entry: keeping it would only make it come back forever.
		log.Printf("guestbook worker %s: dropping message %s: %v", instance, msg.ID, err)
		return 1, q.Delete(q.EntriesQueue, msg)
	}
	sum := sha256.Sum256([]byte(e.Text))
	e.ID, e.Upper, e.Words, e.Sum = msg.ID, strings.ToUpper(e.Text), len(strings.Fields(e.Text)), hex.EncodeToString(sum[:6])
	e.Worker, e.Done = instance, time.Now().UTC()
	if _, err := q.Put(q.BookQueue, e); err != nil {
		return 0, err // not deleted: it comes back after the visibility timeout
	}
	if err := q.Delete(q.EntriesQueue, msg); err != nil {
		return 1, err
	}
	log.Printf("guestbook worker %s: entry %s processed (%d words, delivery %d)", instance, msg.ID, e.Words, msg.Deliveries)
	return 1, q.Trim(q.BookQueue, q.Keep)
}
