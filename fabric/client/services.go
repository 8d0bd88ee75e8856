package client

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// DeployService sends a service manifest (YAML) to be deployed (operator
// token). A refused manifest's error lists every wrong line and field.
func (c *Client) DeployService(ctx context.Context, manifest []byte) (api.Service, error) {
	var out api.Service
	err := c.doBody(ctx, http.MethodPost, "/v1/services", c.Token, bytes.NewReader(manifest), "application/yaml", &out)
	return out, err
}

// Services lists the services (operator token).
func (c *Client) Services(ctx context.Context) ([]api.Service, error) {
	var out []api.Service
	err := c.do(ctx, http.MethodGet, "/v1/services", c.Token, nil, &out)
	return out, err
}

// Service reads one service (operator token).
func (c *Client) Service(ctx context.Context, name string) (api.Service, error) {
	var out api.Service
	err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(name), c.Token, nil, &out)
	return out, err
}

// ScaleService sets a role's instance count (operator token).
func (c *Client) ScaleService(ctx context.Context, name, role string, instances int) (api.Service, error) {
	var out api.Service
	err := c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(name)+"/scale", c.Token, api.ScaleRequest{Role: role, Instances: instances}, &out)
	return out, err
}

// UpgradeService starts an upgrade of a service to a new manifest (YAML);
// mode "" keeps the manifest's (operator token).
func (c *Client) UpgradeService(ctx context.Context, name string, manifest []byte, mode api.UpgradeMode) (api.Service, error) {
	var out api.Service
	err := c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(name)+"/upgrade", c.Token, api.UpgradeRequest{Manifest: string(manifest), Mode: mode}, &out)
	return out, err
}

// WalkService lets a manual upgrade do its next update domain (operator
// token).
func (c *Client) WalkService(ctx context.Context, name string) (api.Service, error) {
	var out api.Service
	err := c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(name)+"/walk", c.Token, nil, &out)
	return out, err
}

// DeleteService removes a service and, through the controller, its
// instances (operator token).
func (c *Client) DeleteService(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/services/"+url.PathEscape(name), c.Token, nil, nil)
}

// Instances lists the instances of one service, or of all with ""
// (operator token).
func (c *Client) Instances(ctx context.Context, service string) ([]api.Instance, error) {
	var out []api.Instance
	err := c.do(ctx, http.MethodGet, "/v1/instances?service="+url.QueryEscape(service), c.Token, nil, &out)
	return out, err
}

// Queue carries out a queue request of guest vm on node id (the node's
// certificate in TLS): what a host agent does for its guests.
func (c *Client) Queue(ctx context.Context, id, vm string, req api.QueueRequest) (api.QueueReply, error) {
	var out api.QueueReply
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(id)+"/vms/"+url.PathEscape(vm)+"/queue", "", req, &out)
	return out, err
}

// Queues describes a service's queues (operator token).
func (c *Client) Queues(ctx context.Context, service string) ([]api.QueueInfo, error) {
	var out []api.QueueInfo
	err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(service)+"/queues", c.Token, nil, &out)
	return out, err
}

// Usage reads usage records of periods ending at or after since (zero:
// all), of one service ("" for all) (operator token).
func (c *Client) Usage(ctx context.Context, since time.Time, service string) ([]api.UsageRecord, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	if service != "" {
		q.Set("service", service)
	}
	var out []api.UsageRecord
	err := c.do(ctx, http.MethodGet, "/v1/usage?"+q.Encode(), c.Token, nil, &out)
	return out, err
}
