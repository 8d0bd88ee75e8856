// Package client calls loomd's HTTP API (documented in package api). It is
// used by loom-agent and the loom CLI, and pulls in nothing but the
// standard library and package api, so it stays small in the initramfs.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// Client talks to one loomd.
type Client struct {
	// BaseURL of loomd, e.g. "http://10.0.0.1:8080" or
	// "unix:///run/loomd.sock". Required.
	BaseURL string
	// Token is sent as "Authorization: Bearer". Default: none.
	Token string
	// HTTP is the transport. Default: a client with a 30s timeout.
	HTTP *http.Client
}

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

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// transport returns the URL prefix and HTTP client for c.BaseURL, which may
// be "unix:///path/to/loomd.sock" as well as http(s)://host:port.
func (c *Client) transport() (string, *http.Client) {
	if path, ok := strings.CutPrefix(c.BaseURL, "unix://"); ok {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return "http://loomd", &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	return strings.TrimRight(c.BaseURL, "/"), hc
}

func (c *Client) do(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	base, hc := c.transport()
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return fmt.Errorf("%s %s: %w", method, path, &StatusError{Code: resp.StatusCode, Message: e.Message})
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

// Register registers a node with the enrollment token in c.Token.
func (c *Client) Register(ctx context.Context, reg api.Registration) (api.RegisterResponse, error) {
	var r api.RegisterResponse
	err := c.do(ctx, http.MethodPost, "/v1/nodes/register", c.Token, reg, &r)
	return r, err
}

// Status posts a heartbeat with the node's credential.
func (c *Client) Status(ctx context.Context, id, credential string, st api.Status) (api.StatusResponse, error) {
	var r api.StatusResponse
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+id+"/status", credential, st, &r)
	return r, err
}

// Nodes lists the nodes (operator token).
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var n []api.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes", c.Token, nil, &n)
	return n, err
}

// Node reads one node (operator token).
func (c *Client) Node(ctx context.Context, id string) (api.Node, error) {
	var n api.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes/"+id, c.Token, nil, &n)
	return n, err
}
