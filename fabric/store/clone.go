package store

import (
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/loomfabric/loom/fabric/api"
)

// deepCopy returns a copy of v that shares no map, slice or pointer with
// it, so a caller may change what the cache hands out without changing
// the cache. Unexported fields (time.Time's) are copied as they are.
func deepCopy[T any](v T) T {
	var out T
	copyValue(reflect.ValueOf(&out).Elem(), reflect.ValueOf(&v).Elem())
	return out
}

// flat remembers, per type, whether a plain assignment copies it whole
// (no pointer, map, slice or interface anywhere inside).
var flat sync.Map // reflect.Type → bool

func isFlat(t reflect.Type) bool {
	if f, ok := flat.Load(t); ok {
		return f.(bool)
	}
	f := true
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		f = false
	case reflect.Array:
		f = isFlat(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if t.Field(i).IsExported() && !isFlat(t.Field(i).Type) {
				f = false
				break
			}
		}
	}
	flat.Store(t, f)
	return f
}

func copyValue(dst, src reflect.Value) {
	if isFlat(src.Type()) {
		dst.Set(src)
		return
	}
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(src.Type().Elem())
		copyValue(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Map:
		if src.IsNil() {
			return
		}
		m := reflect.MakeMapWithSize(src.Type(), src.Len())
		for it := src.MapRange(); it.Next(); {
			v := reflect.New(src.Type().Elem()).Elem()
			copyValue(v, it.Value())
			m.SetMapIndex(it.Key(), v)
		}
		dst.Set(m)
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		if isFlat(src.Type().Elem()) {
			reflect.Copy(s, src)
		} else {
			for i := range src.Len() {
				copyValue(s.Index(i), src.Index(i))
			}
		}
		dst.Set(s)
	case reflect.Array:
		for i := range src.Len() {
			copyValue(dst.Index(i), src.Index(i))
		}
	case reflect.Struct:
		dst.Set(src) // unexported fields as they are
		for i := range src.NumField() {
			if src.Type().Field(i).IsExported() {
				copyValue(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Interface:
		if src.IsNil() {
			return
		}
		v := reflect.New(src.Elem().Type()).Elem()
		copyValue(v, src.Elem())
		dst.Set(v)
	default: // channels and functions are shared
		dst.Set(src)
	}
}

// cloneVM is deepCopy for the VM, by hand: the controller copies every VM
// on each pass.
func cloneVM(v api.VM) api.VM {
	v.Settings = maps.Clone(v.Settings)
	v.Health = clonePtr(v.Health)
	v.Interfaces = slices.Clone(v.Interfaces)
	v.Usage = clonePtr(v.Usage)
	return v
}

// cloneNode is deepCopy for the node, by hand.
func cloneNode(n api.Node) api.Node {
	if n.Inventory != nil {
		inv := *n.Inventory
		inv.NICs, inv.Disks = slices.Clone(inv.NICs), slices.Clone(inv.Disks)
		n.Inventory = &inv
	}
	n.Accel, n.BMC, n.Progress = clonePtr(n.Accel), clonePtr(n.BMC), clonePtr(n.Progress)
	n.History = slices.Clone(n.History)
	return n
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
