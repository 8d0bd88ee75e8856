package guests

import (
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// step is what one reconcile pass does.
type step int

const (
	stepIdle    step = iota // running as desired, or no goal yet: nothing to do
	stepRemove              // deleted: stop it if it runs, remove its files
	stepStop                // stopped on request while QEMU runs
	stepStopped             // stopped on request and already down: say so
	stepWait                // down after a crash: waiting out the backoff
	stepStart               // down and wanted running: start it
	stepReboot              // running, and the goal asks for a newer reboot
)

func (s step) String() string {
	return [...]string{"idle", "remove", "stop", "stopped", "wait", "start", "reboot"}[s]
}

// observed is what the reconcile decision looks at.
type observed struct {
	HasGoal   bool
	Desired   api.VMDesired
	Alive     bool // QEMU runs
	Now       time.Time
	NextStart time.Time // not before (crash backoff)
	RebootGen int64     // wanted by the goal
	Rebooted  int64     // carried out
}

// decide is the supervisor's reconcile decision for one guest.
func decide(o observed) step {
	switch {
	case !o.HasGoal:
		return stepIdle // adopted, waiting for the goal
	case o.Desired == api.VMDeleted:
		return stepRemove
	case o.Desired == api.VMStopped && o.Alive:
		return stepStop
	case o.Desired == api.VMStopped:
		return stepStopped
	case !o.Alive && o.Now.Before(o.NextStart):
		return stepWait
	case !o.Alive:
		return stepStart
	case o.RebootGen > o.Rebooted:
		return stepReboot
	}
	return stepIdle
}

// stableAfter is how long a guest must run for its crashes to be
// forgiven: the next crash waits the shortest backoff again.
const stableAfter = 5 * time.Minute

// restartPolicy is a guest's crash backoff: 1s, 2s, 4s … capped at a
// minute after consecutive failures (crashes, or starts that failed).
type restartPolicy struct {
	crashes int       // consecutive
	next    time.Time // no start before
}

// failed counts a crash or a failed start at now.
func (p *restartPolicy) failed(now time.Time) {
	p.crashes++
	p.next = now.Add(backoff(p.crashes))
}

// running notes that the guest has been up since startedAt.
func (p *restartPolicy) running(startedAt, now time.Time) {
	if now.Sub(startedAt) > stableAfter {
		p.crashes = 0
	}
}

func backoff(n int) time.Duration {
	d := time.Second << min(max(n, 1)-1, 6)
	return min(d, time.Minute)
}
