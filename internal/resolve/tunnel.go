package resolve

import "errors"

// The tunnel call: phantom-proxy asks it at each CONNECT whether a tunnel
// to an origin may be opened, before it answers the CONNECT. It decides
// nothing about the requests inside the tunnel, each of which is resolved.

// FieldOrigin is the tunnel call's origin field: "host:port" in the form of
// internal/origin. Its other fields are FieldToken and FieldClientIP.
const FieldOrigin = "origin"

// TunnelRequest is one CONNECT as the proxy asks the engine about it. Token
// is the CONNECT's proxy credentials, empty when it had none.
type TunnelRequest struct {
	Origin   string `json:"origin"`
	Token    string `json:"token,omitempty"`
	ClientIP string `json:"client_ip,omitempty"`
}

// TunnelAnswer is the engine's decision on a TunnelRequest. A denial
// carries Reason and Message; Route and Accessor name a token that the
// engine knows. Without a token, a denial says no more than
// ReasonOriginNotAllowed.
type TunnelAnswer struct {
	Allowed  *bool  `json:"allowed"` // a pointer: an answer without it is malformed
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	Route    string `json:"route,omitempty"`
	Accessor string `json:"accessor,omitempty"`
}

// Data is a as the engine returns it.
func (a *TunnelAnswer) Data() map[string]any {
	d := map[string]any{"allowed": a.Allowed != nil && *a.Allowed}
	for k, v := range map[string]string{"reason": a.Reason, "message": a.Message, "route": a.Route, "accessor": a.Accessor} {
		if v != "" {
			d[k] = v
		}
	}
	return d
}

// Validate refuses a malformed answer: no decision, or a denial without a
// reason.
func (a *TunnelAnswer) Validate() error {
	switch {
	case a.Allowed == nil:
		return errors.New("the tunnel answer has no decision")
	case !*a.Allowed && a.Reason == "":
		return errors.New("the tunnel answer denies without a reason")
	}
	return nil
}
