// Package client calls loomd's HTTP API (documented in package api). It is
// used by loom-agent and the loom CLI, and pulls in nothing but the
// standard library and package api, so it stays small in the initramfs.
package client

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/pki"
)

// Client talks to loomd: one replica, or any of several.
type Client struct {
	// BaseURL of loomd, e.g. "http://10.0.0.1:8080" or
	// "unix:///run/loomd.sock". Required. Several replicas' URLs,
	// comma-separated, are tried in turn: a call goes to the one that
	// answered last and moves on to the next when one cannot be reached
	// or answers 503 (no leader yet, or it moved), for up to Failover.
	BaseURL string
	// Failover bounds how long a call keeps trying replicas (and waiting
	// out a 503) before it gives up. Default 15s.
	Failover time.Duration
	// Token is sent as "Authorization: Bearer". Default: none.
	Token string
	// TLS is used for https:// replicas when HTTP is unset: the
	// fabric's CA as root (see pki.ClientTLS), and a node's certificate
	// for the node calls (Status, Goal, Queue). Default: the system's
	// roots, no certificate.
	TLS *tls.Config
	// HTTP is the transport. Default: one of the client's own (TLS).
	HTTP *http.Client

	once sync.Once
	hc   *http.Client // made from TLS

	cur int32 // the replica that answered last (atomic)
}

// bases lists BaseURL's replicas.
func (c *Client) bases() []string {
	var out []string
	for _, b := range strings.Split(c.BaseURL, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// URL is the base URL of the replica that answered last (the first of
// BaseURL before any did): for URLs handed to other code.
func (c *Client) URL() string {
	b := c.bases()
	return b[int(atomic.LoadInt32(&c.cur))%len(b)]
}

// retryable says whether a call may be tried again, on this replica or
// the next: loomd said so (503), or the replica could not be reached
// and there is another.
//
// An answer that broke off (the replica died while sending it) is like
// a request that went out and got none: the call may have happened, and
// is tried on the next replica as then (loomd's writes that a client
// repeats are idempotent: registrations by machine, VM creates by the
// client's ID).
func retryable(err error, replicas int) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusServiceUnavailable || se.Code == http.StatusBadGateway
	}
	var ue *url.Error
	var ce cutError
	return replicas > 1 && (errors.As(err, &ue) || errors.As(err, &ce))
}

// cutError is an answer that broke off after it began.
type cutError struct{ err error }

func (e cutError) Error() string { return e.err.Error() }
func (e cutError) Unwrap() error { return e.err }

// StatusError is a non-2xx answer.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// IsUnauthorized reports whether err is a 401 answer.
func IsUnauthorized(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusUnauthorized
}

var defaultHTTP = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 10 * time.Minute}}

// transport returns the URL prefix and HTTP client for base, which may
// be "unix:///path/to/loomd.sock" as well as http(s)://host:port.
func (c *Client) transport(base string) (string, *http.Client) {
	if path, ok := strings.CutPrefix(base, "unix://"); ok {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return "http://loomd", &http.Client{Transport: tr}
	}
	if c.HTTP != nil {
		return base, c.HTTP
	}
	if c.TLS == nil {
		return base, defaultHTTP
	}
	c.once.Do(func() {
		tr := defaultHTTP.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig = c.TLS.Clone() // HTTP/2 sets its protocols in it
		tr.ForceAttemptHTTP2 = true        // one connection a replica (a node's goal long-poll and heartbeats share it)
		tr.MaxIdleConnsPerHost = 16
		c.hc = &http.Client{Transport: tr}
	})
	return base, c.hc
}

// CallTimeout bounds an ordinary API call whose context has no deadline.
const CallTimeout = 30 * time.Second

func (c *Client) do(ctx context.Context, method, path, token string, in, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CallTimeout)
		defer cancel()
	}
	if in == nil {
		return c.doBody(ctx, method, path, token, nil, "", out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.doBody(ctx, method, path, token, bytes.NewReader(b), "application/json", out)
}

// doBody makes a call, on another replica or again if it may be retried
// (see retryable) and its body can be read again (none, or seekable).
func (c *Client) doBody(ctx context.Context, method, path, token string, body io.Reader, contentType string, out any) error {
	bases := c.bases()
	rs, again := body.(io.ReadSeeker)
	again = again || body == nil
	deadline := time.Now().Add(cmp.Or(c.Failover, 15*time.Second))
	first := int(atomic.LoadInt32(&c.cur))
	for i := 0; ; i++ {
		k := (first + i) % len(bases)
		leader, err := c.doOnce(ctx, bases[k], method, path, token, body, contentType, out)
		if err == nil || !retryable(err, len(bases)) {
			if j := slices.Index(bases, strings.TrimRight(leader, "/")); j >= 0 {
				k = j // writes go to the leader from now on
			}
			atomic.StoreInt32(&c.cur, int32(k))
			return err
		}
		if !again || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		if rs != nil {
			if _, serr := rs.Seek(0, io.SeekStart); serr != nil {
				return err
			}
		}
		if (i+1)%len(bases) == 0 { // every replica tried: a pause before the next round
			select {
			case <-ctx.Done():
				return err
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// doOnce makes one call to one replica; leader is what its answer said of
// the leader (api.LeaderHeader), if anything.
func (c *Client) doOnce(ctx context.Context, base, method, path, token string, body io.Reader, contentType string, out any) (leader string, err error) {
	base, hc := c.transport(base)
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	leader = resp.Header.Get(api.LeaderHeader)
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return leader, fmt.Errorf("%s %s: reading answer: %w", method, path, cutError{err})
	}
	if resp.StatusCode == http.StatusNotModified {
		return leader, &StatusError{Code: resp.StatusCode, Message: "not modified"}
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return leader, fmt.Errorf("%s %s: %w", method, path, &StatusError{Code: resp.StatusCode, Message: e.Message})
	}
	if out == nil || len(data) == 0 {
		return leader, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return leader, fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return leader, nil
}

// Register registers a node with the enrollment token in c.Token.
func (c *Client) Register(ctx context.Context, reg api.Registration) (api.RegisterResponse, error) {
	var r api.RegisterResponse
	err := c.do(ctx, http.MethodPost, "/v1/nodes/register", c.Token, reg, &r)
	return r, err
}

// Status posts a heartbeat (the node's certificate in TLS).
func (c *Client) Status(ctx context.Context, id string, st api.Status) (api.StatusResponse, error) {
	var r api.StatusResponse
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+id+"/status", "", st, &r)
	return r, err
}

// Nodes lists the nodes (operator token).
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var n []api.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes", c.Token, nil, &n)
	return n, err
}

// Leases lists the DHCP leases, expired ones included (operator token).
func (c *Client) Leases(ctx context.Context) ([]api.Lease, error) {
	var l []api.Lease
	err := c.do(ctx, http.MethodGet, "/v1/leases", c.Token, nil, &l)
	return l, err
}

// Node reads one node (operator token).
func (c *Client) Node(ctx context.Context, id string) (api.Node, error) {
	var n api.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes/"+id, c.Token, nil, &n)
	return n, err
}

// Image reads an image's manifest (operator or enrollment token).
func (c *Client) Image(ctx context.Context, name string) (api.Manifest, error) {
	var m api.Manifest
	err := c.do(ctx, http.MethodGet, "/v1/images/"+name, c.Token, nil, &m)
	return m, err
}

// Images lists the images (operator token).
func (c *Client) Images(ctx context.Context) ([]api.Manifest, error) {
	var ms []api.Manifest
	err := c.do(ctx, http.MethodGet, "/v1/images", c.Token, nil, &ms)
	return ms, err
}

// RemoveImage deletes an image (operator token).
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/images/"+name, c.Token, nil, nil)
}

// AddImage uploads an image, with an optional .bmap (operator token).
func (c *Client) AddImage(ctx context.Context, name string, img io.Reader, bmap io.Reader) (api.Manifest, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			if bmap != nil {
				p, err := mw.CreateFormFile("bmap", "image.bmap")
				if err != nil {
					return err
				}
				if _, err := io.Copy(p, bmap); err != nil {
					return err
				}
			}
			p, err := mw.CreateFormFile("image", name)
			if err != nil {
				return err
			}
			if _, err := io.Copy(p, img); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	var m api.Manifest
	err := c.doBody(ctx, http.MethodPost, "/v1/images?name="+url.QueryEscape(name), c.Token, pr, mw.FormDataContentType(), &m)
	return m, err
}

// Goal long-polls the node's goal state: it returns (goal, true) when the
// goal's incarnation differs from have, (zero, false) when nothing changed
// within wait.
func (c *Client) Goal(ctx context.Context, id string, have int64, wait time.Duration) (api.Goal, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+CallTimeout)
	defer cancel()
	var g api.Goal
	path := fmt.Sprintf("/v1/nodes/%s/goal?incarnation=%d&wait=%s", id, have, wait)
	err := c.do(ctx, http.MethodGet, path, "", nil, &g)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotModified {
		return api.Goal{}, false, nil
	}
	if err != nil {
		return api.Goal{}, false, err
	}
	return g, true, nil
}

// DeleteNode forgets a node and revokes its certificate (operator token).
func (c *Client) DeleteNode(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/nodes/"+id, c.Token, nil, nil)
}

// Provision asks for a node to be imaged with a profile (operator token).
func (c *Client) Provision(ctx context.Context, id, profile string) (api.Node, error) {
	var n api.Node
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+id+"/provision", c.Token, api.ProvisionRequest{Profile: profile}, &n)
	return n, err
}

// Reprovision asks for a node to be imaged again (operator token).
func (c *Client) Reprovision(ctx context.Context, id string) (api.Node, error) {
	var n api.Node
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+id+"/reprovision", c.Token, struct{}{}, &n)
	return n, err
}

// Decommission asks for a node's disks to be erased and the node powered
// off (operator token).
func (c *Client) Decommission(ctx context.Context, id string) (api.Node, error) {
	var n api.Node
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+id+"/decommission", c.Token, struct{}{}, &n)
	return n, err
}

// PutProfile creates or replaces a profile (operator token).
func (c *Client) PutProfile(ctx context.Context, p api.Profile) (api.Profile, error) {
	var out api.Profile
	err := c.do(ctx, http.MethodPut, "/v1/profiles/"+p.Name, c.Token, p, &out)
	return out, err
}

// Profiles lists the profiles (operator token).
func (c *Client) Profiles(ctx context.Context) ([]api.Profile, error) {
	var ps []api.Profile
	err := c.do(ctx, http.MethodGet, "/v1/profiles", c.Token, nil, &ps)
	return ps, err
}

// DeleteProfile removes a profile (operator token).
func (c *Client) DeleteProfile(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/profiles/"+name, c.Token, nil, nil)
}

// CreateVM asks for a VM (operator token).
//
// The request carries an ID of the client's (unless req has one): a
// retry on another replica after a failover then finds the VM the first
// attempt made rather than making a second.
func (c *Client) CreateVM(ctx context.Context, req api.VMRequest) (api.VM, error) {
	if req.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand never fails
		req.ID = "vm-" + hex.EncodeToString(b[:])
	}
	var vm api.VM
	err := c.do(ctx, http.MethodPost, "/v1/vms", c.Token, req, &vm)
	return vm, err
}

// VMs lists the VMs (operator token).
func (c *Client) VMs(ctx context.Context) ([]api.VM, error) {
	var vms []api.VM
	err := c.do(ctx, http.MethodGet, "/v1/vms", c.Token, nil, &vms)
	return vms, err
}

// VM reads one VM (operator token).
func (c *Client) VM(ctx context.Context, id string) (api.VM, error) {
	var vm api.VM
	err := c.do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(id), c.Token, nil, &vm)
	return vm, err
}

// VMAction is start, stop, reboot or delete (operator token).
func (c *Client) VMAction(ctx context.Context, id string, action api.VMAction) (api.VM, error) {
	var vm api.VM
	if action == api.VMDelete {
		return vm, c.do(ctx, http.MethodDelete, "/v1/vms/"+url.PathEscape(id), c.Token, nil, nil)
	}
	err := c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(id)+"/"+string(action), c.Token, struct{}{}, &vm)
	return vm, err
}

// Blob downloads path (an image blob URL from a goal) to w, authenticated
// with the enrollment token.
func (c *Client) Blob(ctx context.Context, path string, w io.Writer) error {
	body, err := c.OpenBlob(ctx, path, nil)
	if err != nil {
		return err
	}
	defer func() { _ = body.Close() }() // read side
	_, err = io.Copy(w, body)
	return err
}

// OpenBlob opens path (an image blob URL) for reading, with c.Token and
// the extra headers hdr; any answer but 200 is an error.
func (c *Client) OpenBlob(ctx context.Context, path string, hdr http.Header) (io.ReadCloser, error) {
	base, hc := c.transport(c.URL())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close() // read side
		return nil, &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	return resp.Body, nil
}

// PutCredential stores a BMC credential (operator token).
func (c *Client) PutCredential(ctx context.Context, cred api.Credential) (api.Credential, error) {
	var out api.Credential
	err := c.do(ctx, http.MethodPut, "/v1/credentials/"+cred.Name, c.Token, cred, &out)
	return out, err
}

// Credentials lists the BMC credentials, without passwords (operator token).
func (c *Client) Credentials(ctx context.Context) ([]api.Credential, error) {
	var out []api.Credential
	err := c.do(ctx, http.MethodGet, "/v1/credentials", c.Token, nil, &out)
	return out, err
}

// SetBMC gives a node its BMC (operator token).
func (c *Client) SetBMC(ctx context.Context, id string, b api.BMC) (api.Node, error) {
	var n api.Node
	err := c.do(ctx, http.MethodPut, "/v1/nodes/"+id+"/bmc", c.Token, b, &n)
	return n, err
}

// Power performs a power operation on a node through its BMC (operator
// token) and returns the power state after it.
func (c *Client) Power(ctx context.Context, id, op string) (string, error) {
	var out api.PowerResult
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+id+"/power", c.Token, api.PowerRequest{Op: op}, &out)
	return out.Power, err
}

// ImportRack imports a rack CSV (operator token). A bad file imports
// nothing; the error names its lines and fields.
func (c *Client) ImportRack(ctx context.Context, csv []byte) (api.RackImport, error) {
	var out api.RackImport
	err := c.doBody(ctx, http.MethodPost, "/v1/racks/import", c.Token, bytes.NewReader(csv), "text/csv", &out)
	return out, err
}

// Racks lists the racks with their nodes by phase (operator token).
func (c *Client) Racks(ctx context.Context) ([]api.RackSummary, error) {
	var out []api.RackSummary
	err := c.do(ctx, http.MethodGet, "/v1/racks", c.Token, nil, &out)
	return out, err
}

// RackNodes lists one rack's nodes (operator token).
func (c *Client) RackNodes(ctx context.Context, rack string) ([]api.Node, error) {
	var n []api.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes?rack="+url.QueryEscape(rack), c.Token, nil, &n)
	return n, err
}

// PowerRack performs a power operation on every node of a rack through
// their BMCs (operator token); each node's outcome is in the result.
func (c *Client) PowerRack(ctx context.Context, rack, op string) (api.RackPower, error) {
	var out api.RackPower
	err := c.do(ctx, http.MethodPost, "/v1/racks/"+url.PathEscape(rack)+"/power", c.Token, api.PowerRequest{Op: op}, &out)
	return out, err
}

// ClusterStatus lists the control plane's members and their health.
func (c *Client) ClusterStatus(ctx context.Context) (api.ClusterStatus, error) {
	var s api.ClusterStatus
	err := c.do(ctx, http.MethodGet, "/v1/cluster", c.Token, nil, &s)
	return s, err
}

// ClusterSelf is the status of the replica c talks to.
func (c *Client) ClusterSelf(ctx context.Context) (api.MemberStatus, error) {
	var s api.MemberStatus
	err := c.do(ctx, http.MethodGet, "/v1/cluster/self", c.Token, nil, &s)
	return s, err
}

// ClusterAdd adds a member for a new replica and returns its flags.
func (c *Client) ClusterAdd(ctx context.Context, m api.MemberAdd) (api.MemberAdded, error) {
	var a api.MemberAdded
	err := c.do(ctx, http.MethodPost, "/v1/cluster/members", c.Token, m, &a)
	return a, err
}

// ClusterRemove removes a replica's member.
func (c *Client) ClusterRemove(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(name), c.Token, nil, nil)
}

// CreateToken makes a named operator token (admin); its secret is in
// the answer, and only there.
func (c *Client) CreateToken(ctx context.Context, name string, role api.Role) (api.TokenCreated, error) {
	var t api.TokenCreated
	err := c.do(ctx, http.MethodPost, "/v1/tokens", c.Token, api.TokenCreate{Name: name, Role: role}, &t)
	return t, err
}

// Tokens lists the named tokens (admin).
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var ts []api.Token
	err := c.do(ctx, http.MethodGet, "/v1/tokens", c.Token, nil, &ts)
	return ts, err
}

// RevokeToken revokes a named token (admin).
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(name), c.Token, nil, nil)
}

// Audit reads up to limit audit records from since on (admin).
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) ([]api.AuditRecord, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var recs []api.AuditRecord
	err := c.do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), c.Token, nil, &recs)
	return recs, err
}

// Enroll registers reg (the enrollment token in c.Token) with a new key
// and its CSR, and returns the answer and a client for the same replicas
// that calls as the node (its new certificate in TLS).
func (c *Client) Enroll(ctx context.Context, reg api.Registration) (api.RegisterResponse, *Client, error) {
	key, err := pki.NewKey()
	if err != nil {
		return api.RegisterResponse{}, nil, err
	}
	if reg.CSR, err = pki.CSR(key, reg.MAC); err != nil {
		return api.RegisterResponse{}, nil, err
	}
	resp, err := c.Register(ctx, reg)
	if err != nil {
		return resp, nil, err
	}
	nc, err := c.AsNode(key, resp.Certificate)
	return resp, nc, err
}

// AsNode is a client for the same replicas (and CA) as c that calls as
// the node whose certificate (PEM) is for key.
func (c *Client) AsNode(key crypto.Signer, certPEM string) (*Client, error) {
	kp, err := pki.KeyPEM(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), kp)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLS != nil {
		t = c.TLS.Clone()
	}
	t.Certificates = []tls.Certificate{cert}
	return &Client{BaseURL: c.BaseURL, Failover: c.Failover, TLS: t}, nil
}

// Metrics reads the replica's Prometheus exposition (any operator token).
func (c *Client) Metrics(ctx context.Context) (string, error) { return c.text(ctx, "/metrics") }

// Console reads the last lines of a node's console log (loomd
// --console-dir).
func (c *Client) Console(ctx context.Context, id string, lines int) (string, error) {
	return c.text(ctx, "/v1/nodes/"+url.PathEscape(id)+"/console?lines="+strconv.Itoa(lines))
}

// text reads a plain-text answer.
func (c *Client) text(ctx context.Context, path string) (string, error) {
	body, err := c.OpenBlob(ctx, path, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = body.Close() }() // read side
	b, err := io.ReadAll(body)
	return string(b), err
}

// EventQuery picks events (see api.Event).
type EventQuery struct {
	Object string
	Since  time.Time
	Limit  int
}

func (q EventQuery) values() url.Values {
	v := url.Values{}
	if q.Object != "" {
		v.Set("object", q.Object)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Events lists the events q picks, oldest first (any operator token).
func (c *Client) Events(ctx context.Context, q EventQuery) ([]api.Event, error) {
	var evs []api.Event
	err := c.do(ctx, http.MethodGet, "/v1/events?"+q.values().Encode(), c.Token, nil, &evs)
	return evs, err
}

// FollowEvents calls fn with the events q picks and then with each new
// one as it is recorded, until ctx ends (nil then) or fn fails.
func (c *Client) FollowEvents(ctx context.Context, q EventQuery, fn func(api.Event) error) error {
	v := q.values()
	v.Set("follow", "true")
	body, err := c.OpenBlob(ctx, "/v1/events?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	defer func() { _ = body.Close() }() // read side
	dec := json.NewDecoder(body)
	for {
		var e api.Event
		if err := dec.Decode(&e); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("following events: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}
