package control

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/mail"
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

// defaults fills in the tunnel pools left unset.
func (cfg *Config) defaults() {
	if !cfg.IPv4Pool.IsValid() {
		cfg.IPv4Pool = DefaultIPv4Pool
	}
	if !cfg.IPv6Pool.IsValid() {
		cfg.IPv6Pool = DefaultIPv6Pool
	}
}

// CheckConfig checks a configuration without opening or creating anything,
// so that a command can refuse bad flags before it starts: New runs it
// too. Unset pools mean the defaults.
func CheckConfig(cfg Config) error {
	cfg.defaults()
	if cfg.DataDir == "" {
		return errors.New("control: no data directory")
	}
	if err := errors.Join(check.Pool(cfg.IPv4Pool, 4), check.Pool(cfg.IPv6Pool, 6)); err != nil {
		return fmt.Errorf("control: tunnel pool: %w", err)
	}
	if _, err := check.CasePattern(cfg.CasePattern); err != nil {
		return err
	}
	if err := checkWebhook(cfg.IncidentWebhook); err != nil {
		return err
	}
	if cfg.Mail != nil {
		if _, err := mail.New(*cfg.Mail); err != nil {
			return err
		}
	}
	if cfg.ICTLogLocation != "" {
		if _, err := jurisdiction.ParseCountry(cfg.ICTLogLocation); err != nil {
			return fmt.Errorf("ICT log location: %w", err)
		}
	}
	return nil
}
