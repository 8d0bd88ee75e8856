package guests

import "github.com/loomfabric/loom/fabric/api"

// usage is what the guest has used so far, for metering: CPU time and
// memory from its control group, bytes over its channel. Called with g.mu
// held.
func (g *guest) usage() *api.Usage {
	u := &api.Usage{ChannelBytes: g.ch.Bytes.Load()}
	if g.cg != nil {
		cu := g.cg.Usage()
		u.CPUSeconds, u.MemoryBytes = cu.CPUSeconds, cu.MemoryBytes
	}
	return u
}
