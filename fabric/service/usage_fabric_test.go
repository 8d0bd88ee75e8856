package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/loomd"
)

// TestUsageAddsUp: the instance-seconds recorded add up to how long the
// instances ran (within a sample at each start and stop), channel bytes
// are counted, and the records survive a loomd restart.
func TestUsageAddsUp(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{UsageSample: 100 * time.Millisecond, UsageFlush: 500 * time.Millisecond})
	f.addHost("")
	f.addHost("")
	ctx := context.Background()
	if _, err := f.op.DeployService(ctx, []byte("name: metered\nroles:\n  - {name: w, kind: worker, package: work, instances: 2, memory: 64MiB}\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "2 Ready", func() bool {
		n := 0
		for _, in := range f.instances("metered") {
			if in.State == api.InstanceReady {
				n++
			}
		}
		return n == 2
	})
	ready := time.Now()
	time.Sleep(3 * time.Second)
	if err := f.op.DeleteService(ctx, "metered"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the instances gone", func() bool { return len(f.instances("")) == 0 })
	ran := 2 * time.Since(ready).Seconds() // an upper bound: they stop a little after the delete
	time.Sleep(time.Second)                // a flush after the last look
	f.restart()
	us, err := f.op.Usage(ctx, time.Time{}, "metered")
	if err != nil {
		t.Fatal(err)
	}
	var secs float64
	var bytes uint64
	for _, u := range us {
		if u.Role != "w" || u.VCPUs != 1 || u.MemoryMB != 64 || !u.End.After(u.Start) {
			t.Errorf("record %+v", u)
		}
		secs += u.InstanceSeconds
		bytes += u.ChannelBytes
	}
	// 2 instances × (3 s + the delete) — less one sample at each end.
	if secs < 2*3-2*0.3 || secs > ran+0.3 {
		t.Errorf("%.2f instance-seconds recorded, want about %.1f (at most %.2f)", secs, 6.0, ran)
	}
	if bytes == 0 {
		t.Error("no channel bytes recorded")
	}
	t.Logf("%d records after a restart: %.2f instance-seconds, %d channel bytes", len(us), secs, bytes)
	if us, err := f.op.Usage(ctx, time.Now().Add(time.Hour), ""); err != nil || len(us) != 0 {
		t.Errorf("usage since an hour ahead: %d records, %v", len(us), err)
	}
	if us, err := f.op.Usage(ctx, time.Time{}, "nope"); err != nil || len(us) != 0 {
		t.Errorf("usage of no such service: %d records, %v", len(us), err)
	}
}
