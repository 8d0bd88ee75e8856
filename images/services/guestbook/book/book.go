// Package book is what the guestbook's two roles share: the entry they
// pass along, and a small client of the queues at the guest agent's local
// endpoint ($LOOM_ENDPOINT/queues/…).
package book

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// MaxEntry bounds an entry's text.
const MaxEntry = 1024

// Entry is an entry as the web role queues it and, with the rest filled
// in, as the worker role puts it in the book.
type Entry struct {
	Text string    `json:"text"`
	Web  string    `json:"web"` // the web instance that took it
	At   time.Time `json:"at"`
	// Filled in by the worker.
	ID     string    `json:"id,omitempty"` // its message ID on the entries queue
	Upper  string    `json:"upper,omitempty"`
	Words  int       `json:"words,omitempty"`
	Sum    string    `json:"sha256,omitempty"` // the first 12 hex digits
	Worker string    `json:"worker,omitempty"`
	Done   time.Time `json:"done,omitzero"`
}

// Decode reads an entry.
func Decode(b []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, err
	}
	if e.Text == "" {
		return Entry{}, errors.New("an entry without text")
	}
	return e, nil
}

// Message is a delivered message.
type Message struct {
	ID, Receipt string
	Deliveries  int
	Body        []byte
}

// Queues reaches the service's queues at Endpoint.
type Queues struct {
	Endpoint string
	// From the role's settings: the queue names and how many processed
	// entries the book keeps.
	EntriesQueue, BookQueue string
	Keep                    int
}

var client = &http.Client{Timeout: 40 * time.Second}

// Settings reads the role's settings (entries, book, keep), falling back to
// "entries", "book" and 20.
func (q *Queues) Settings() {
	q.EntriesQueue, q.BookQueue, q.Keep = "entries", "book", 20
	resp, err := client.Get(q.Endpoint + "/settings")
	if err != nil {
		return
	}
	defer func() { _ = resp.Body.Close() }() // decoded below
	var m map[string]string
	if json.NewDecoder(resp.Body).Decode(&m) != nil {
		return
	}
	if m["entries"] != "" {
		q.EntriesQueue = m["entries"]
	}
	if m["book"] != "" {
		q.BookQueue = m["book"]
	}
	if n, err := strconv.Atoi(m["keep"]); err == nil && n > 0 && n <= 32 {
		q.Keep = n
	}
}

func (q *Queues) do(method, path string, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, q.Endpoint+"/queues/"+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, nil, fmt.Errorf("%s /queues/%s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return resp, b, nil
}

// Put puts v (as JSON) on queue and returns the message's ID.
func (q *Queues) Put(queue string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	_, out, err := q.do(http.MethodPost, queue, b)
	if err != nil {
		return "", err
	}
	var r struct{ ID string }
	if err := json.Unmarshal(out, &r); err != nil {
		return "", err
	}
	return r.ID, nil
}

// Get takes the oldest visible message of queue (nil if none), hidden for
// visibility unless deleted.
func (q *Queues) Get(queue string, visibility time.Duration) (*Message, error) {
	resp, b, err := q.do(http.MethodGet, queue+"?visibility="+visibility.String(), nil)
	if err != nil || resp.StatusCode == http.StatusNoContent {
		return nil, err
	}
	n, _ := strconv.Atoi(resp.Header.Get("Loom-Deliveries"))
	return &Message{ID: resp.Header.Get("Loom-Message-Id"), Receipt: resp.Header.Get("Loom-Receipt"), Deliveries: n, Body: b}, nil
}

// Delete removes a message got from queue.
func (q *Queues) Delete(queue string, m *Message) error {
	_, _, err := q.do(http.MethodDelete, queue+"/"+m.ID+"?receipt="+m.Receipt, nil)
	return err
}

type peeked struct {
	Length   int `json:"length"`
	Messages []struct {
		ID   string `json:"id"`
		Body []byte `json:"body"`
	} `json:"messages"`
}

func (q *Queues) peek(queue string, n int) (peeked, error) {
	var p peeked
	_, b, err := q.do(http.MethodGet, queue+"?peek="+strconv.Itoa(n), nil)
	if err != nil {
		return p, err
	}
	return p, json.Unmarshal(b, &p)
}

// Length is how many messages queue holds.
func (q *Queues) Length(queue string) (int, error) {
	p, err := q.peek(queue, 1)
	return p.Length, err
}

// Book is the processed entries, oldest first, each once (an entry
// processed twice — at least once delivery — shows once).
func (q *Queues) Book() ([]Entry, error) {
	p, err := q.peek(q.BookQueue, 32)
	if err != nil {
		return nil, err
	}
	out := []Entry{}
	seen := map[string]bool{}
	for _, m := range p.Messages {
		e, err := Decode(m.Body)
		if err != nil || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		out = append(out, e)
	}
	return out, nil
}

// Trim takes the oldest messages off queue until it holds at most keep.
// Several workers trimming at once may take a few too many: the book is
// the newest entries, not a record.
func (q *Queues) Trim(queue string, keep int) error {
	for {
		n, err := q.Length(queue)
		if err != nil || n <= keep {
			return err
		}
		m, err := q.Get(queue, 10*time.Second)
		if err != nil || m == nil {
			return err
		}
		if err := q.Delete(queue, m); err != nil {
			return err
		}
	}
}
