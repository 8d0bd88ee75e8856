package api

import (
	"fmt"
	"time"
)

// Role is what an operator token may do.
type Role string

// The roles, each allowed what the one before is and more.
const (
	// RoleViewer reads: every GET of the API.
	RoleViewer Role = "viewer"
	// RoleOperator also writes: provisions, VMs, services, images, power.
	RoleOperator Role = "operator"
	// RoleAdmin also manages tokens and the control plane's replicas.
	RoleAdmin Role = "admin"
)

// ParseRole checks a role's name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleViewer, RoleOperator, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want viewer, operator or admin", s)
}

// Allows says whether r may do what need asks.
func (r Role) Allows(need Role) bool { return r.rank() >= need.rank() }

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Token is a named operator token as the API shows it: never its secret,
// which is stored only as a hash and shown once, when it is made.
type Token struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"createdBy"`
}

// TokenCreate asks POST /v1/tokens for a token.
type TokenCreate struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// TokenCreated answers it: the token, and its secret (the bearer token),
// shown this once.
type TokenCreated struct {
	Token
	Secret string `json:"secret"`
}

// AuditRecord is one write through the API: who made it (a token's name,
// "operator" for the data directory's token, "enroll" for a
// registration), what (method and path), when, and the result (the HTTP
// status, and the error's message if it failed).
type AuditRecord struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	Role   Role      `json:"role,omitempty"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Status int       `json:"status"`
	Error  string    `json:"error,omitempty"`
	// From is the client's address (the first replica's client, for a
	// write another replica forwarded).
	From string `json:"from,omitempty"`
}
