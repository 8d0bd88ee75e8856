package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// Deploy uploads the role packages of a service that loomd lacks
// (rolesDir/PACKAGE.tar for each role of the manifest), deploys
// the manifest and waits up to d for every instance to be Ready, saying
// on out how far they got whenever that changes. After d a service with
// an instance Ready in every role is good enough (said on out); one
// without is an error. It returns the service
// as loomd describes it (with its endpoints).
func Deploy(ctx context.Context, c *client.Client, manifestPath, rolesDir string, d time.Duration, out io.Writer) (api.Service, error) {
	manifest, err := os.ReadFile(manifestPath)
	if err != nil {
		return api.Service{}, err
	}
	// Only the packages: loomd checks the rest (scripts/lab stays clear
	// of fabric/service, which the BMC tests' imports would cycle through).
	var parsed struct {
		Roles []struct {
			Package string `yaml:"package"`
		} `yaml:"roles"`
	}
	if err := yaml.Unmarshal(manifest, &parsed); err != nil {
		return api.Service{}, fmt.Errorf("%s: %w", manifestPath, err)
	}
	for _, r := range parsed.Roles {
		if err := upload(ctx, c, r.Package, filepath.Join(rolesDir, r.Package+".tar")); err != nil {
			return api.Service{}, err
		}
	}
	svc, err := c.DeployService(ctx, manifest)
	if err != nil {
		return api.Service{}, fmt.Errorf("deploying %s: %w", manifestPath, err)
	}
	want := map[string]int{}
	for _, r := range svc.Roles {
		want[r.Name] = r.Instances
	}
	deadline := time.Now().Add(d)
	last := ""
	for {
		ins, err := c.Instances(ctx, svc.Name)
		if err != nil {
			return svc, err
		}
		ready := map[string]int{}
		var notReady []string
		for _, in := range ins {
			if in.State == api.InstanceReady {
				ready[in.Role]++
			} else if in.Reason != "" {
				notReady = append(notReady, fmt.Sprintf("%s %s: %s", in.ID, in.State, in.Reason))
			}
		}
		var parts []string
		done := true
		for _, r := range svc.Roles {
			parts = append(parts, fmt.Sprintf("%d/%d %s", ready[r.Name], want[r.Name], r.Name))
			done = done && ready[r.Name] >= want[r.Name]
		}
		if now := strings.Join(parts, ", ") + " Ready"; now != last {
			fmt.Fprintf(out, "   %s: %s\n", svc.Name, now)
			last = now
		}
		if done {
			return c.Service(ctx, svc.Name)
		}
		if time.Now().After(deadline) {
			usable := true
			for _, r := range svc.Roles {
				usable = usable && (ready[r.Name] > 0 || want[r.Name] == 0)
			}
			if !usable {
				return svc, fmt.Errorf("service %s: %s after %v (%s)", svc.Name, last, d, strings.Join(notReady, "; "))
			}
			// Every role serves: go on, and say what is still coming.
			fmt.Fprintf(out, "   %s: not all Ready after %v, but every role has an instance Ready; the rest are still booting (loom instance list %s)\n", svc.Name, d, svc.Name)
			return c.Service(ctx, svc.Name)
		}
		select {
		case <-ctx.Done():
			return svc, ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
}

// upload stores the image at path as name unless loomd has an image of
// that name.
func upload(ctx context.Context, c *client.Client, name, path string) error {
	if _, err := c.Image(ctx, name); err == nil {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%v (run 'make images')", err)
	}
	defer func() { _ = f.Close() }() // read only
	if _, err := c.AddImage(ctx, name, f, nil); err != nil {
		return fmt.Errorf("uploading %s: %w", path, err)
	}
	return nil
}
