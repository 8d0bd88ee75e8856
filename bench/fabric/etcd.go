package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// etcdWriteRate is what a bare embedded etcd member (loomd's store engine,
// configured alike) takes in writes per second from 8 concurrent writers
// of 1 KiB values over d: the ceiling loomd's own writes share.
func etcdWriteRate(ctx context.Context, dir string, d time.Duration) (float64, error) {
	free := func() (url.URL, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return url.URL{}, err
		}
		defer func() { _ = l.Close() }() // etcd takes the port next
		return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
	}
	ec := embed.NewConfig()
	ec.Name, ec.Dir, ec.LogLevel = "bench", dir, "error"
	peer, err := free()
	if err != nil {
		return 0, err
	}
	cl, err := free()
	if err != nil {
		return 0, err
	}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cl}, []url.URL{cl}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("etcd not ready after a minute")
	}
	cli := v3client.New(e.Server)
	defer func() { _ = cli.Close() }() // in-process: nothing to flush
	val := strings.Repeat("x", 1024)
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	var firstErr atomic.Value
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if _, err := cli.Put(ctx, fmt.Sprintf("/bench/%d/%d", w, i), val); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / d.Seconds(), nil
}
