package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// Leases are stored by MAC, and each leased address is claimed by one
// MAC, so that replicas serving DHCP on one network never hand out an
// address twice:
//
//	/loom/v1/leases/<mac>    api.Lease
//	/loom/v1/leaseip/<ip>    the MAC holding the address (plain text)
func leaseIPKey(ip string) string { return prefix + "leaseip/" + ip }

// LeaseWrite is one lease to store. Prev is the MAC its server believes
// holds the address's claim: "" (none: a new address), the lease's own
// MAC (a renewal), or another MAC whose lease ran out (it is displaced).
// The write lands only if the claim is as believed (or absent, for the
// lease's own MAC: a lease stored before claims existed).
type LeaseWrite struct {
	Lease api.Lease
	Prev  string
}

// LeaseConflict is a write that did not land: another MAC (Holder)
// claims the address, most likely through another replica.
type LeaseConflict struct {
	Index  int // in the puts given
	IP     string
	Holder string
}

// ClaimLeases writes puts, each only if its address's claim is as its
// server believes (see LeaseWrite), and removes the leases in dels (with
// their address's claim when IP is set and the claim is still theirs),
// in one transaction: each put lands or is returned as a conflict on its
// own. Any replica may claim leases, leader or not.
//
// A claim whose holder's lease has since moved to another address (the
// holder took a new one) is stale: it passes to the new lease.
func (s *Store) ClaimLeases(ctx context.Context, puts []LeaseWrite, dels []api.Lease) ([]LeaseConflict, error) {
	conflicts, err := s.claimLeases(ctx, puts, dels)
	if err != nil || len(conflicts) == 0 {
		return conflicts, err
	}
	var out []LeaseConflict
	for _, c := range conflicts {
		if c.Holder == "" {
			out = append(out, c)
			continue
		}
		hl, err := s.leases().get(ctx, c.Holder)
		if err != nil && !IsNotFound(err) {
			return nil, err
		}
		if err == nil && hl.IP == c.IP {
			out = append(out, c) // a live claim
			continue
		}
		again, err := s.claimLeases(ctx, []LeaseWrite{{Lease: puts[c.Index].Lease, Prev: c.Holder}}, nil)
		if err != nil {
			return nil, err
		}
		for _, a := range again {
			a.Index = c.Index
			out = append(out, a)
		}
	}
	return out, nil
}

func (s *Store) claimLeases(ctx context.Context, puts []LeaseWrite, dels []api.Lease) ([]LeaseConflict, error) {
	if len(puts)+len(dels) > MaxTxnOps {
		return nil, fmt.Errorf("committing leases: %d operations, at most %d", len(puts)+len(dels), MaxTxnOps)
	}
	values := make([]string, len(puts))
	for i, w := range puts {
		b, err := json.Marshal(w.Lease)
		if err != nil {
			return nil, err
		}
		values[i] = string(b)
	}
	if len(dels) == 0 && len(puts) > 0 && 2*len(puts) <= MaxTxnOps {
		landed, err := s.claimAsBelieved(ctx, puts, values)
		if landed || err != nil {
			return nil, err
		}
	}
	ops := make([]clientv3.Op, 0, len(puts)+2*len(dels))
	for i, w := range puts {
		l := w.Lease
		b := values[i]
		ipk, lk := leaseIPKey(l.IP), s.leases().key(l.MAC)
		claim := []clientv3.Op{clientv3.OpPut(ipk, l.MAC), clientv3.OpPut(lk, b)}
		// Tried in turn, each in the Else of the one before: the claim
		// is Prev's (passed on), absent (taken), already this MAC's
		// (kept); else the holder is read. A value compare fails on a
		// missing key.
		mine := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ipk), "=", l.MAC)},
			[]clientv3.Op{clientv3.OpPut(lk, b)}, []clientv3.Op{clientv3.OpGet(ipk)})
		op := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ipk), "=", 0)}, claim, []clientv3.Op{mine})
		if w.Prev != "" && w.Prev != l.MAC {
			op = clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ipk), "=", w.Prev)}, claim, []clientv3.Op{op})
		}
		ops = append(ops, op)
	}
	for _, l := range dels {
		ops = append(ops, clientv3.OpDelete(s.leases().key(l.MAC)))
		if l.IP != "" {
			ipk := leaseIPKey(l.IP)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ipk), "=", l.MAC)}, []clientv3.Op{clientv3.OpDelete(ipk)}, nil))
		}
	}
	if len(ops) == 0 {
		return nil, nil
	}
	r, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("committing %d lease changes: %w", len(ops), err)
	}
	var out []LeaseConflict
	for i, w := range puts {
		t := r.Responses[i].GetResponseTxn()
		for !t.Succeeded && t.Responses[0].GetResponseTxn() != nil {
			t = t.Responses[0].GetResponseTxn() // the next way in turn
		}
		if t.Succeeded {
			continue
		}
		c := LeaseConflict{Index: i, IP: w.Lease.IP}
		if kvs := t.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			c.Holder = string(kvs[0].Value)
		}
		out = append(out, c)
	}
	return out, nil
}

// claimAsBelieved writes puts (values: their JSON) in one flat
// transaction guarded by every claim being as its server believes: the
// common case (one server, or replicas that agree), where etcd checks
// one comparison a lease instead of a nested transaction's, and a
// renewal rewrites only its lease, not its unchanged claim. It reports
// whether the writes landed; when not (some claim was not as believed),
// nothing was written and the caller sorts them out one by one.
func (s *Store) claimAsBelieved(ctx context.Context, puts []LeaseWrite, values []string) (bool, error) {
	cmps := make([]clientv3.Cmp, 0, len(puts))
	ops := make([]clientv3.Op, 0, 2*len(puts))
	for i, w := range puts {
		l := w.Lease
		ipk, lk := leaseIPKey(l.IP), s.leases().key(l.MAC)
		switch w.Prev {
		case l.MAC:
			cmps = append(cmps, clientv3.Compare(clientv3.Value(ipk), "=", l.MAC))
		case "":
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ipk), "=", 0))
			ops = append(ops, clientv3.OpPut(ipk, l.MAC))
		default:
			cmps = append(cmps, clientv3.Compare(clientv3.Value(ipk), "=", w.Prev))
			ops = append(ops, clientv3.OpPut(ipk, l.MAC))
		}
		ops = append(ops, clientv3.OpPut(lk, values[i]))
	}
	r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("committing %d leases: %w", len(puts), err)
	}
	return r.Succeeded, nil
}

// CommitLeases writes puts (each a renewal of its MAC's claim, or a new
// one) and removes the leases of the MACs in dels in one transaction. A
// lease whose address another MAC claims fails it all.
func (s *Store) CommitLeases(ctx context.Context, puts []api.Lease, dels []string) error {
	ws := make([]LeaseWrite, len(puts))
	for i, l := range puts {
		ws[i] = LeaseWrite{Lease: l, Prev: l.MAC}
	}
	ds := make([]api.Lease, len(dels))
	for i, m := range dels {
		ds[i] = api.Lease{MAC: m}
	}
	conflicts, err := s.ClaimLeases(ctx, ws, ds)
	if err != nil {
		return err
	}
	if len(conflicts) > 0 {
		c := conflicts[0]
		return fmt.Errorf("lease of %s: address %s is claimed by %s: %w", puts[c.Index].MAC, c.IP, c.Holder, ErrExists)
	}
	return nil
}

// Lease reads the lease of one MAC.
func (s *Store) Lease(ctx context.Context, mac string) (api.Lease, error) {
	return s.leases().get(ctx, mac)
}
