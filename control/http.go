package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/errcode"
)

// This file is the HTTP edge of the control server's services: how bodies
// are read, how answers and errors are written. Handlers decode, call one
// service method, and encode; every error goes through fail.

// statusOf is the one table from error codes to HTTP statuses.
func statusOf(c errcode.Code) int {
	switch c {
	case errcode.Invalid:
		return http.StatusBadRequest
	case errcode.Unauthenticated:
		return http.StatusUnauthorized
	case errcode.Forbidden:
		return http.StatusForbidden
	case errcode.NotFound:
		return http.StatusNotFound
	case errcode.Timeout:
		return http.StatusRequestTimeout
	case errcode.Conflict:
		return http.StatusConflict
	case errcode.TooLarge:
		return http.StatusRequestEntityTooLarge
	case errcode.TooMany:
		return http.StatusTooManyRequests
	case errcode.Upstream:
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// fail answers a request whose service call returned err: the status of
// its code, and its message. An internal error (one without a code) is
// logged (errors built in this package carry no personal data: no
// addresses or names of people) and answered with a generic message.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := errcode.Of(err)
	if code == errcode.Internal {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if d := errcode.RetryAfter(err); d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
	writeError(w, statusOf(code), errcode.Message(err))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

// decode reads a JSON body into v: bounded in size, unknown fields and
// trailing data refused, with a message that says what was wrong.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeUpTo(w, r, v, maxBody)
}

// decodeUpTo is decode for a body of up to limit bytes.
func decodeUpTo(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	body := bufio.NewReader(http.MaxBytesReader(w, r.Body, limit))
	err := jsonObject(body)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err == nil {
		err = dec.Decode(v)
	}
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON object")
	}
	if err == nil {
		if _, e := dec.Token(); e != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", limit))
	case errors.Is(err, errSlowBody):
		writeError(w, http.StatusRequestTimeout, err.Error())
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "empty request body; a JSON object is required")
	default:
		writeError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
	}
	return false
}

// jsonObject checks that a body holds a JSON object (after any white
// space) without consuming it: null, arrays and scalars are refused, not
// taken as an empty request.
func jsonObject(body *bufio.Reader) error {
	for {
		c, err := body.ReadByte()
		if err != nil {
			return err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return body.UnreadByte()
		}
		return errors.New("the body must be a JSON object ({...})")
	}
}
