package store

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

// A cached copy reads its own writes and everyone else's that completed
// before the read — also when the newest revision is a key outside the
// store's (an etcd shared with others: the copy then waits on etcd's
// progress notification), and from many goroutines at once; deletes are seen; the secondary index follows an
// object whose key moves.
func TestCachedReadsAreConsistent(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	c := collection[thing]{s: s, prefix: prefix + "test-things/", kind: "thing"}
	cc := followed(t, s, c.prefix)

	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprint("w", w)
			for i := range 100 {
				if err := c.put(ctx, name, thing{Name: name, Count: i}); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 { // the newest revision is outside the store's keys
					if _, err := s.cli.Put(ctx, "/elsewhere/"+name, "x"); err != nil {
						t.Error(err)
						return
					}
				}
				got, err := cc.get(ctx, name)
				if err != nil || got.Count != i {
					t.Errorf("read after write %d of %s: %+v, %v", i, name, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	all, err := cc.list(ctx, nil)
	if err != nil || len(all) != 4 || !slices.IsSortedFunc(all, func(a, b thing) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("list = %+v, %v; want 4 in key order", all, err)
	}
	odd, err := cc.list(ctx, func(x *thing) bool { return x.Name == "w1" })
	if err != nil || len(odd) != 1 || odd[0].Name != "w1" {
		t.Errorf("list of w1 = %+v, %v", odd, err)
	}
	if in, err := cc.byIndex(ctx, "99"); err != nil || len(in) != 4 {
		t.Errorf("byIndex(99) = %+v, %v; want all four", in, err)
	}
	if err := c.put(ctx, "w0", thing{Name: "w0", Count: 7}); err != nil {
		t.Fatal(err)
	}
	if in, _ := cc.byIndex(ctx, "99"); len(in) != 3 {
		t.Errorf("byIndex(99) after w0 moved = %+v, want three", in)
	}
	if in, _ := cc.byIndex(ctx, "7"); len(in) != 1 || in[0].Name != "w0" {
		t.Errorf("byIndex(7) = %+v, want w0", in)
	}
	if err := c.del(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.get(ctx, "w0"); !IsNotFound(err) {
		t.Errorf("get after delete = %v, want ErrNotFound", err)
	}
	if in, _ := cc.byIndex(ctx, "7"); len(in) != 0 {
		t.Errorf("byIndex(7) after delete = %+v", in)
	}

	// A wait on a missing object ends once the copy is past the revision.
	_, rev, _ := cc.getRev(ctx, "w1")
	if err := c.put(ctx, "w9", thing{Name: "w9"}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cc.wait(wctx, "w0", rev); err != nil {
		t.Errorf("wait on a deleted object: %v", err)
	}
}

// What the store's copies hand out is the caller's own: changing a VM's
// settings, interfaces or usage changes neither the copy nor the next
// reader's.
func TestCachedCopiesAreTheirs(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	v := api.VM{ID: "vm-1", Node: "n-1", Settings: map[string]string{"a": "1"}, Health: &api.HealthProbe{Path: "/h"},
		VMStatus: api.VMStatus{Interfaces: []string{"eth0"}, Usage: &api.Usage{CPUSeconds: 1}}}
	if _, err := s.ChangeVMs(ctx, func([]api.Node, []api.VM) (VMChange, error) { return VMChange{Put: []api.VM{v}}, nil }); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func() (api.VM, error){
		func() (api.VM, error) { return s.VM(ctx, "vm-1") },
		func() (api.VM, error) { l, err := s.VMs(ctx); return l[0], err },
		func() (api.VM, error) { l, err := s.VMsOn(ctx, "n-1"); return l[0], err },
	} {
		got, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(v, got); d != "" {
			t.Fatalf("read back (-stored +read):\n%s", d)
		}
		got.Settings["a"] = "changed"
		got.Health.Path = "/changed"
		got.Interfaces[0] = "changed"
		got.Usage.CPUSeconds = 99
	}
	again, err := s.VM(ctx, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(v, again); d != "" {
		t.Errorf("a reader's change reached the copy (-stored +now):\n%s", d)
	}
}

// After Close a read fails rather than waiting for ever.
func TestCachedAfterClose(t *testing.T) {
	s := open(t, t.TempDir())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.Nodes(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("Nodes after Close = %v (ctx %v), want an error at once", err, ctx.Err())
	}
}

// The hand-written clones of VM and node leave no map, slice or pointer
// shared, for every field there is (filled in by reflection, so a field
// added later without its clone fails here).
func TestHandClones(t *testing.T) {
	checkClone(t, "cloneVM", cloneVM)
	checkClone(t, "cloneNode", cloneNode)
	checkClone(t, "cloneManifest", cloneManifest)
	checkClone(t, "cloneService", cloneService)
}

func checkClone[T any](t *testing.T, name string, clone func(T) T) {
	var v T
	fill(reflect.ValueOf(&v).Elem())
	c := clone(v)
	if s := shared(reflect.ValueOf(v), reflect.ValueOf(c), reflect.TypeFor[T]().Name()); s != "" {
		t.Errorf("%s shares %s", name, s)
	}
	if d := cmp.Diff(v, c); d != "" {
		t.Errorf("%s differs:\n%s", name, d)
	}
}

// fill gives every exported field, element and pointee a non-zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	}
}

// shared names the first map, slice or pointer a and b have in common.
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice:
		if !a.IsNil() && a.UnsafePointer() == b.UnsafePointer() {
			return path
		}
	}
	switch a.Kind() {
	case reflect.Pointer:
		if !a.IsNil() {
			return shared(a.Elem(), b.Elem(), path)
		}
	case reflect.Slice:
		for i := range min(a.Len(), b.Len()) {
			if s := shared(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); s != "" {
				return s
			}
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				if s := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); s != "" {
					return s
				}
			}
		}
	}
	return ""
}

// A Relaxed read of an object written a moment ago still finds it (a
// miss is looked for again after waiting), and never shows less than an
// earlier read did.
func TestRelaxedReads(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	relaxed := Relaxed(ctx)
	if !IsRelaxed(relaxed) || IsRelaxed(Strict(relaxed)) || IsRelaxed(ctx) {
		t.Fatal("Relaxed/Strict do not mark the context")
	}
	for i := range 50 {
		id := fmt.Sprint("n-", i)
		if err := s.CreateNode(ctx, api.Node{ID: id, Phase: api.PhaseRegistered}, nil, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.SetCredential(ctx, id, "hash"); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Node(relaxed, id); err != nil || n.ID != id {
			t.Fatalf("relaxed read of node %s just written: %+v, %v", id, n, err)
		}
		if c, err := s.Credential(relaxed, id); err != nil || c != "hash" {
			t.Fatalf("relaxed read of a credential just written: %q, %v", c, err)
		}
		if all, err := s.Nodes(relaxed); err != nil || len(all) != i+1 {
			t.Fatalf("relaxed list after %d nodes: %d, %v", i+1, len(all), err)
		}
	}
	if _, err := s.Node(relaxed, "n-none"); !IsNotFound(err) {
		t.Errorf("relaxed read of a missing node = %v, want ErrNotFound", err)
	}
}
