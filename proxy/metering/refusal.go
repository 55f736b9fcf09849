package metering

import "github.com/phantomvault/phantom/internal/resolve"

// Refusal is why a request may not go upstream under its limits. Reason is
// one of resolve's reasons (resolve.Reason*): the one table gives the
// status the agent sees. Message says more than the table's message; ""
// leaves the table's.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string {
	if r.Message == "" {
		return r.Reason
	}
	return r.Message
}

// refuse is the refusal of reason with the table's message.
func refuse(reason string) *Refusal { return &Refusal{Reason: reason} }

// badRequest refuses a request as malformed, saying why.
func badRequest(message string) *Refusal {
	return &Refusal{Reason: resolve.ReasonBadRequest, Message: message}
}
