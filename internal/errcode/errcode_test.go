package errcode

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

type conflict struct{ what string }

func (c *conflict) Error() string   { return c.what }
func (c *conflict) ErrorCode() Code { return Conflict }

func TestOfAndMessage(t *testing.T) {
	cause := errors.New("disk on fire")
	for _, tc := range []struct {
		name string
		err  error
		code Code
		msg  string
	}{
		{"nil", nil, "", ""},
		{"plain error is internal", cause, Internal, "internal error; see the control server's log"},
		{"coded", New(NotFound, "no such user"), NotFound, "no such user"},
		{"formatted", Errorf(Invalid, "name %q too long", "x"), Invalid, `name "x" too long`},
		{"wrapped by a caller: the coded message only", fmt.Errorf("user alice: %w", New(Conflict, "exists")), Conflict, "exists"},
		{"coder of another package", fmt.Errorf("store: %w", &conflict{"name taken"}), Conflict, "name taken"},
		{"wrap keeps the message", Wrap(Upstream, cause), Upstream, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Of(tc.err); got != tc.code {
				t.Errorf("Of = %q, want %q", got, tc.code)
			}
			if tc.err == nil {
				return
			}
			if got := Message(tc.err); got != tc.msg {
				t.Errorf("Message = %q, want %q", got, tc.msg)
			}
		})
	}
}

func TestCauseIsKept(t *testing.T) {
	cause := errors.New("cause")
	if err := Errorf(Upstream, "sending: %w", cause); !errors.Is(err, cause) {
		t.Errorf("Errorf with %%w lost its cause")
	}
	if err := Wrap(Invalid, cause); !errors.Is(err, cause) {
		t.Errorf("Wrap lost its cause")
	}
	if Wrap(Invalid, nil) != nil {
		t.Errorf("Wrap(nil) is not nil")
	}
}

func TestRetryAfter(t *testing.T) {
	err := fmt.Errorf("x: %w", &Error{Code: TooMany, Message: "slow down", RetryAfter: 3 * time.Second})
	if got := RetryAfter(err); got != 3*time.Second {
		t.Errorf("RetryAfter = %v", got)
	}
	if got := RetryAfter(errors.New("plain")); got != 0 {
		t.Errorf("RetryAfter of a plain error = %v", got)
	}
}
