package api

import (
	"net/netip"
	"time"
)

// Roles of admin tokens.
const (
	RoleAdmin      = "admin"      // accounts, devices, fleet, jurisdictions
	RoleCompliance = "compliance" // lawful lookups (with a case reference), exports, verify
	RoleAuditor    = "auditor"    // verify the ledger; no personal data
)

// OwnershipPattern is item (g) of CERT-In direction (v): the ownership
// pattern of the subscriber hiring the service.
type OwnershipPattern string

const (
	Individual  OwnershipPattern = "individual"
	Company     OwnershipPattern = "company"
	Partnership OwnershipPattern = "partnership"
	Government  OwnershipPattern = "government"
	OtherOwner  OwnershipPattern = "other"
)

// ValidationState says whether a field has been validated.
type ValidationState string

const (
	Unvalidated ValidationState = "unvalidated"
	Validated   ValidationState = "validated"
	Rejected    ValidationState = "rejected"
)

// Validation is the state of one "validated" field and the evidence for it.
type Validation struct {
	State    ValidationState `json:"state"`
	Method   string          `json:"method,omitempty"`   // e.g. "email-code", "document", "phone-call"
	Evidence string          `json:"evidence,omitempty"` // a reference to the evidence, not the evidence itself
	By       string          `json:"by,omitempty"`       // who validated (token id), or "subscriber" for a code
	At       time.Time       `json:"at,omitzero"`
	Clock    *ClockSync      `json:"clock,omitempty"` // the control node's sync state at At
}

// SubscriberRecord is what CERT-In direction (v) asks a VPN service
// provider to register, keep accurate and retain for 5 years after the
// registration is cancelled. Item (c), the addresses allotted and used,
// comes from the account's devices and sessions.
type SubscriberRecord struct {
	User string `json:"user"`
	// (a) validated name of the subscriber
	Name           string     `json:"name"`
	NameValidation Validation `json:"name_validation"`
	// (b) period of hire, including dates
	HireStart   time.Time `json:"hire_start"`
	CancelledAt time.Time `json:"cancelled_at,omitzero"`
	// (d) email address, and the IP address and time stamp used at
	// registration
	Email           string     `json:"email"`
	EmailValidation Validation `json:"email_validation"`
	RegistrationIP  netip.Addr `json:"registration_ip"`
	RegisteredAt    time.Time  `json:"registered_at"`
	// (e) purpose for hiring the services
	Purpose string `json:"purpose"`
	// (f) validated address and contact numbers
	Address           string     `json:"address"`
	AddressValidation Validation `json:"address_validation"`
	Phones            []string   `json:"phones"`
	PhoneValidation   Validation `json:"phone_validation"`
	// (g) ownership pattern
	Ownership OwnershipPattern `json:"ownership"`
	// The control node's clock sync state (CERT-In direction (i)) when the
	// registration was taken (RegisteredAt) and when it was cancelled;
	// each validation carries its own. Nil in records taken before it was
	// kept.
	Clock          *ClockSync `json:"clock,omitempty"`
	CancelledClock *ClockSync `json:"cancelled_clock,omitempty"`
}

// SubscriberDetails are the fields a subscriber (or an operator on their
// behalf) gives at registration.
type SubscriberDetails struct {
	Name      string           `json:"name"`
	Email     string           `json:"email"`
	Purpose   string           `json:"purpose"`
	Address   string           `json:"address"`
	Phones    []string         `json:"phones"`
	Ownership OwnershipPattern `json:"ownership"`
}

// SignupRequest is the body of the public POST /signup.
type SignupRequest struct {
	User       string             `json:"user"` // account name
	Subscriber *SubscriberDetails `json:"subscriber,omitempty"`
}

// SignupResponse answers a sign-up.
type SignupResponse struct {
	User User `json:"user"`
	// RecordKept says whether a subscriber record was kept (a duty, or the
	// operator's choice, requires it).
	RecordKept bool `json:"record_kept"`
	// EmailCodeSent says a one-time code went to the email address; the
	// subscriber confirms it at POST /signup/verify-email.
	EmailCodeSent bool `json:"email_code_sent"`
}

// VerifyEmailRequest confirms an email address with the code sent to it.
type VerifyEmailRequest struct {
	User string `json:"user"`
	Code string `json:"code"`
}

// ValidateRequest records an operator's validation of a field.
type ValidateRequest struct {
	Field    string          `json:"field"` // name, address or phones
	State    ValidationState `json:"state"` // validated or rejected
	Method   string          `json:"method"`
	Evidence string          `json:"evidence"`
}
