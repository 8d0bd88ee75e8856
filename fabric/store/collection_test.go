package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type thing struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// The generic collection against real (embedded) etcd: create once, CAS
// updates that lose no increment under contention, an update whose fn
// fails writes nothing, a cached copy's wait wakes on a change (not on
// another object's), delete and not-found.
func TestCollection(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	c := collection[thing]{s: s, prefix: prefix + "test-things/", kind: "thing"}

	if _, err := c.get(ctx, "a"); !IsNotFound(err) || !strings.Contains(err.Error(), "thing a") {
		t.Errorf("get of a missing thing = %v, want ErrNotFound naming it", err)
	}
	if err := c.create(ctx, "a", thing{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := c.create(ctx, "a", thing{Name: "a", Count: 9}); !errors.Is(err, ErrExists) {
		t.Errorf("second create = %v, want ErrExists", err)
	}
	const writers, each = 8, 10
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := c.update(ctx, "a", func(x *thing) error { x.Count++; return nil }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got, rev, err := c.getRev(ctx, "a")
	if err != nil || got.Count != writers*each {
		t.Fatalf("after %d concurrent increments: %+v, %v", writers*each, got, err)
	}
	if _, err := c.update(ctx, "a", func(x *thing) error { x.Count = -1; return errors.New("no") }); err == nil {
		t.Errorf("an update whose fn failed succeeded")
	}
	if got, _ := c.get(ctx, "a"); got.Count != writers*each {
		t.Errorf("a failed update wrote %+v", got)
	}

	cc := followed(t, s, c.prefix)
	woke := make(chan error, 1)
	go func() { woke <- cc.wait(ctx, "a", rev) }()
	select {
	case err := <-woke:
		t.Fatalf("wait returned before any change: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.put(ctx, "b", thing{Name: "b"}) // another object: does not wake it
	select {
	case err := <-woke:
		t.Fatalf("wait woke for another object: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.update(ctx, "a", func(x *thing) error { x.Count++; return nil })
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not wake on a change")
	}

	all, err := c.all(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "a" || all[1].Name != "b" {
		t.Errorf("all = %+v, %v; want a and b in key order", all, err)
	}
	if err := c.del(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.del(ctx, "a"); !IsNotFound(err) {
		t.Errorf("second delete = %v, want ErrNotFound", err)
	}
	if _, err := c.update(ctx, "a", func(*thing) error { return nil }); !IsNotFound(err) {
		t.Errorf("update of a deleted thing = %v, want ErrNotFound", err)
	}
}

// followed is a cached copy of the things under prefix (filed under
// their count), kept by s from now on.
func followed(t *testing.T, s *Store, prefix string) *cached[thing] {
	t.Helper()
	s.stop() // the watch starts again with the new kind among the others
	s.wg.Wait()
	cc := newCached(s, prefix, "thing", decodeJSON[thing], nil, func(x *thing) string { return fmt.Sprint(x.Count) })
	s.run(slog.New(slog.DiscardHandler))
	return cc
}
