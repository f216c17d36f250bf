// Package errcode gives an error a code that says what went wrong for the
// caller (bad input, not found, a conflict, too many requests …), so that
// the services behind the control API return typed errors and one table at
// the edge (control/http.go) turns codes into HTTP statuses.
//
// The message of a coded error is shown to the caller as it is: it never
// holds personal data (no addresses, names, emails). An error without a
// code is an internal error: the caller sees a generic message and the
// operator's log gets the cause.
package errcode

import (
	"errors"
	"fmt"
	"time"
)

// Code is what kind of failure an error is, from the caller's side.
type Code string

// The codes. Each maps to exactly one HTTP status (control/http.go).
const (
	Invalid         Code = "invalid"         // the request is malformed or breaks a rule: 400
	Unauthenticated Code = "unauthenticated" // no valid credential: 401
	Forbidden       Code = "forbidden"       // a valid credential that may not do this: 403
	NotFound        Code = "not_found"       // the thing named does not exist: 404
	Timeout         Code = "timeout"         // the request was too slow to arrive: 408
	Conflict        Code = "conflict"        // the request clashes with the current state: 409
	TooLarge        Code = "too_large"       // the request body is too large: 413
	TooMany         Code = "too_many"        // a limit was reached; retry later: 429
	Upstream        Code = "upstream"        // a server Meridian depends on failed (SMTP …): 502
	Internal        Code = "internal"        // anything else: 500, details only in the log
)

// Error is an error with a code and a message safe to show the caller.
type Error struct {
	Code    Code
	Message string
	// RetryAfter, for TooMany, is when the caller may try again.
	RetryAfter time.Duration
	// Err is the cause, if any (errors.Is and errors.As see it).
	Err error
}

func (e *Error) Error() string { return e.Message }

func (e *Error) Unwrap() error { return e.Err }

// New returns an error with code c and message msg.
func New(c Code, msg string) *Error { return &Error{Code: c, Message: msg} }

// Errorf returns an error with code c and a formatted message; a %w verb
// wraps its argument as the cause.
func Errorf(c Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: c, Message: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap gives err code c, keeping err's message and err as the cause. nil
// stays nil.
func Wrap(c Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: c, Message: err.Error(), Err: err}
}

// Coder is implemented by error types of other packages that carry a
// code of their own (store.ConflictError …).
type Coder interface{ ErrorCode() Code }

// Of returns err's code: that of the first coded error in its chain, or
// Internal when there is none. Of(nil) is "".
func Of(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var c Coder
	if errors.As(err, &c) {
		return c.ErrorCode()
	}
	return Internal
}

// Message is the message to show the caller: the coded error's own
// message (not what wrapped it on the way up, which may name things the
// caller must not see), or a generic one for an internal error.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	if Of(err) != Internal {
		var c Coder
		errors.As(err, &c)
		return c.(error).Error()
	}
	return "internal error; see the control server's log"
}

// RetryAfter is how long a TooMany error asks the caller to wait; 0 if
// it does not say.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
