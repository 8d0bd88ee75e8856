package guests

import (
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

func TestDecide(t *testing.T) {
	now := time.Unix(1000, 0)
	later, earlier := now.Add(time.Second), now.Add(-time.Second)
	for _, c := range []struct {
		name string
		o    observed
		want step
	}{
		{"adopted, no goal yet", observed{Alive: true}, stepIdle},
		{"no goal, not running", observed{}, stepIdle},
		{"deleted while running", observed{HasGoal: true, Desired: api.VMDeleted, Alive: true}, stepRemove},
		{"deleted while down", observed{HasGoal: true, Desired: api.VMDeleted}, stepRemove},
		{"deleted during backoff", observed{HasGoal: true, Desired: api.VMDeleted, Now: now, NextStart: later}, stepRemove},
		{"stop requested, running", observed{HasGoal: true, Desired: api.VMStopped, Alive: true}, stepStop},
		{"stop requested, down", observed{HasGoal: true, Desired: api.VMStopped}, stepStopped},
		{"stopped ignores a pending reboot", observed{HasGoal: true, Desired: api.VMStopped, RebootGen: 3}, stepStopped},
		{"new guest", observed{HasGoal: true, Desired: api.VMRunning, Now: now}, stepStart},
		{"crashed, backoff not over", observed{HasGoal: true, Desired: api.VMRunning, Now: now, NextStart: later}, stepWait},
		{"crashed, backoff over", observed{HasGoal: true, Desired: api.VMRunning, Now: now, NextStart: earlier}, stepStart},
		{"crashed, backoff ends now", observed{HasGoal: true, Desired: api.VMRunning, Now: now, NextStart: now}, stepStart},
		{"running as wanted", observed{HasGoal: true, Desired: api.VMRunning, Alive: true, RebootGen: 2, Rebooted: 2}, stepIdle},
		{"reboot asked", observed{HasGoal: true, Desired: api.VMRunning, Alive: true, RebootGen: 3, Rebooted: 2}, stepReboot},
		{"older reboot generation", observed{HasGoal: true, Desired: api.VMRunning, Alive: true, RebootGen: 1, Rebooted: 2}, stepIdle},
		{"reboot asked while down: start first", observed{HasGoal: true, Desired: api.VMRunning, RebootGen: 3, Now: now}, stepStart},
	} {
		if got := decide(c.o); got != c.want {
			t.Errorf("%s: decide = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := backoff(i + 1); got != w*time.Second {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := backoff(0); got != time.Second {
		t.Errorf("backoff(0) = %v, want 1s", got)
	}
}

func TestRestartPolicy(t *testing.T) {
	now := time.Unix(1000, 0)
	var p restartPolicy
	for i, w := range []time.Duration{1, 2, 4} {
		p.failed(now)
		if got := p.next.Sub(now); got != w*time.Second {
			t.Errorf("after %d failures the next start waits %v, want %v", i+1, got, w*time.Second)
		}
	}
	// Up for a while but not long enough: the next crash waits longer still.
	p.running(now, now.Add(stableAfter-time.Second))
	p.failed(now)
	if got := p.next.Sub(now); got != 8*time.Second {
		t.Errorf("crash after a short run waits %v, want 8s", got)
	}
	// Stable: forgiven.
	p.running(now, now.Add(stableAfter+time.Second))
	p.failed(now)
	if got := p.next.Sub(now); got != time.Second {
		t.Errorf("crash after a stable run waits %v, want 1s", got)
	}
}
