package api

// LeaderHeader, on the answer to a write, names the leader's API URL: a
// client that knows several replicas sends its next writes there
// directly rather than through a replica that forwards them.
const LeaderHeader = "Loom-Leader"

// ForwardedHeader marks a request one replica forwarded to the leader,
// naming that replica (a replica never forwards one again: the leader
// moved meanwhile, and the client is told to retry); X-Forwarded-For is
// then the client's address.
const ForwardedHeader = "Loom-Forwarded-By"

// PeerFetchHeader marks a replica's request for a blob it lacks: the
// replica asked answers from its own disk only.
const PeerFetchHeader = "Loom-Peer-Fetch"

// Replica is one loomd of a replicated control plane as the others find
// it: its name (its etcd member's) and where its API and its etcd peer
// port are reached.
type Replica struct {
	Name string `json:"name"`
	// API is the URL other replicas forward writes to and clients may use.
	API string `json:"api"`
	// Peer is its etcd member's peer URL.
	Peer string `json:"peer,omitempty"`
}

// MemberStatus is one etcd member of the control plane as GET /v1/cluster
// reports it. A member whose replica did not answer has Healthy false
// and Error set; its figures are then zero.
type MemberStatus struct {
	Name     string   `json:"name"`
	ID       string   `json:"id"`
	PeerURLs []string `json:"peerURLs"`
	// API is the member's loomd, if one runs and is known.
	API     string `json:"api,omitempty"`
	Learner bool   `json:"learner,omitempty"`
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
	// Leader: this member's loomd leads the fabric. RaftLeader: its etcd
	// member leads raft (not always the same one).
	Leader     bool `json:"leader,omitempty"`
	RaftLeader bool `json:"raftLeader,omitempty"`
	// RaftIndex is the member's raft log index, Lag how far it trails the
	// highest index reported.
	RaftIndex    uint64 `json:"raftIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	Lag          uint64 `json:"lag"`
	// DBSize is the store's size on disk, DBInUse the part holding data
	// (the rest is reclaimed by defragmentation).
	DBSize  int64 `json:"dbSize"`
	DBInUse int64 `json:"dbInUse"`
	// Revision is the store revision the member has applied.
	Revision int64 `json:"revision"`
}

// ClusterStatus answers GET /v1/cluster.
type ClusterStatus struct {
	ClusterID string `json:"clusterID"`
	// Leader names the replica that leads the fabric ("" while none does).
	Leader  string         `json:"leader"`
	Members []MemberStatus `json:"members"`
}

// MemberAdd asks POST /v1/cluster/members to add a replica's member.
type MemberAdd struct {
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
}

// MemberAdded answers it: the flags to start the new replica with.
type MemberAdded struct {
	Name           string   `json:"name"`
	ID             string   `json:"id"`
	InitialCluster string   `json:"initialCluster"`
	Flags          []string `json:"flags"`
}

// ClientCertHeader carries, on a write a replica forwards to the leader,
// the certificate (base64 DER) the node presented to that replica. The
// leader believes it only from a connection authenticated by a replica's
// certificate.
const ClientCertHeader = "Loom-Client-Cert"
