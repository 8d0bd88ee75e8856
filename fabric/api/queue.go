package api

import (
	"errors"
	"fmt"
	"time"
)

// Queues: named message queues per service, for a web role to hand work
// to a worker role. Delivery is at least once: a message got is hidden
// for its visibility timeout and comes back unless it is deleted with the
// receipt of that delivery. Messages are kept in the store, so they
// survive loomd restarts (and are replicated where the store is).
//
// A role reaches only its own service's queues, through its host: the
// guest agent's local endpoint → the channel ("queue" host service) →
// its host agent →
//
//	POST /v1/nodes/{id}/vms/{vm}/queue   QueueRequest → QueueReply (node credential;
//	                                     the VM must be an instance on that node)
//
// and operators see them with
//
//	GET /v1/services/{name}/queues       → []QueueInfo

// QueueOp is what a QueueRequest does.
type QueueOp string

// Queue operations.
const (
	QueuePut    QueueOp = "put"    // Body → the new message's ID
	QueueGet    QueueOp = "get"    // the oldest visible message, hidden for Visibility; none: no Message
	QueueDelete QueueOp = "delete" // ID + the Receipt of its latest delivery
	QueuePeek   QueueOp = "peek"   // up to Max visible messages from the front, left as they are, and the queue's length
)

// Limits on queues.
const (
	MaxQueueMessage    = 64 << 10 // bytes of one message's body
	MaxQueueLength     = 10000    // messages in one queue
	MaxQueuesPerSvc    = 64
	DefaultVisibility  = 30 * time.Second
	MaxVisibility      = 12 * time.Hour
	MaxPeek            = 32 // messages one peek returns
	queueNameMaxLength = 63
)

// QueueRequest is one queue operation.
type QueueRequest struct {
	Op    QueueOp `json:"op"`
	Queue string  `json:"queue"`
	// Body of a put.
	Body []byte `json:"body,omitempty"`
	// Visibility of a get: how long the message stays hidden (default
	// DefaultVisibility).
	Visibility Duration `json:"visibility,omitempty"`
	// ID and Receipt of a delete.
	ID      string `json:"id,omitempty"`
	Receipt string `json:"receipt,omitempty"`
	// Max messages a peek returns (1 to MaxPeek; default 1).
	Max int `json:"max,omitempty"`
}

// Validate checks a queue request; the error names the bad field.
func (q *QueueRequest) Validate() error {
	if !ValidName(q.Queue) || len(q.Queue) > queueNameMaxLength {
		return fmt.Errorf("queue: %q: want 1 to 63 of a-z 0-9 . _ - starting with a letter or digit", q.Queue)
	}
	switch q.Op {
	case QueuePut:
		if len(q.Body) > MaxQueueMessage {
			return fmt.Errorf("body: %d bytes: a message holds at most %d", len(q.Body), MaxQueueMessage)
		}
	case QueueGet:
		if q.Visibility == 0 {
			q.Visibility = Duration(DefaultVisibility)
		}
		if v := time.Duration(q.Visibility); v < time.Second || v > MaxVisibility {
			return fmt.Errorf("visibility: %v: want 1s to %v", v, MaxVisibility)
		}
	case QueueDelete:
		if q.ID == "" || q.Receipt == "" {
			return errors.New("id and receipt: required (the receipt comes with the message's delivery)")
		}
	case QueuePeek:
		if q.Max == 0 {
			q.Max = 1
		}
		if q.Max < 1 || q.Max > MaxPeek {
			return fmt.Errorf("max: %d: want 1 to %d", q.Max, MaxPeek)
		}
	default:
		return fmt.Errorf("op: %q: want put, get, delete or peek", q.Op)
	}
	return nil
}

// QueueMessage is one message as delivered.
type QueueMessage struct {
	ID       string    `json:"id"`
	Body     []byte    `json:"body"`
	Enqueued time.Time `json:"enqueued"`
	// Deliveries counts gets of this message, this one included.
	Deliveries int `json:"deliveries"`
	// Receipt deletes the message; only the latest delivery's works.
	Receipt string `json:"receipt"`
	// Hidden until VisibleAt.
	VisibleAt time.Time `json:"visibleAt"`
}

// QueueReply answers a QueueRequest: a put's ID, a get's message (nil
// when none is visible), a peek's messages (no receipts: peeking delivers
// nothing) and the queue's length.
type QueueReply struct {
	ID       string         `json:"id,omitempty"`
	Message  *QueueMessage  `json:"message,omitempty"`
	Messages []QueueMessage `json:"messages,omitempty"`
	Length   int            `json:"length,omitempty"`
}

// QueueInfo is one queue as operators see it.
type QueueInfo struct {
	Name string `json:"name"`
	// Messages in the queue, and how many of them are hidden (delivered,
	// not yet deleted).
	Messages int `json:"messages"`
	Hidden   int `json:"hidden"`
}
