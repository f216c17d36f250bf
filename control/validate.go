package control

import (
	"net/http"
	"strings"

	"github.com/meridian-vpn/meridian/internal/check"
)

// Input checks shared by the handlers; the rules themselves live in
// internal/check, so the command line applies the same ones.

// caseRef returns the case reference every compliance read needs (query
// parameter case), checked by check.CaseRef and the operator's pattern.
func (s *Server) caseRef(w http.ResponseWriter, r *http.Request) (string, bool) {
	c := strings.TrimSpace(r.URL.Query().Get("case"))
	if err := check.CaseRef(c, s.casePattern); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return c, true
}

// pathID reads the positive decimal id in the path ({id}): digits only,
// no sign.
func pathID(w http.ResponseWriter, r *http.Request, what string) (int64, bool) {
	id, err := check.ID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, what+" id must be a positive number")
		return 0, false
	}
	return id, true
}
