package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/ipam"
	"github.com/meridian-vpn/meridian/store"
	"github.com/meridian-vpn/meridian/wg"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

func checkName(what, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name must be 1-64 characters of letters, digits, '.', '_', '@' or '-', starting with a letter or digit", what)
	}
	return nil
}

// storeError maps store errors to HTTP answers.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	var ce *store.ConflictError
	var te *store.TokenError
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, notFound)
	case errors.As(err, &ce):
		writeError(w, http.StatusConflict, ce.What)
	case errors.As(err, &te):
		writeError(w, http.StatusUnauthorized, te.Error())
	default:
		s.fail(w, r, err)
	}
}

func (s *Server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	var req api.CreateUserRequest
	if !decode(w, r, &req) {
		return
	}
	if err := checkName("user", req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch req.Kind {
	case "":
		req.Kind = api.Consumer
	case api.Consumer, api.Enterprise:
	default:
		writeError(w, http.StatusBadRequest, `kind must be "consumer" or "enterprise"`)
		return
	}
	if resp, ok := s.register(w, r, req.Name, req.Kind, req.Subscriber, false); ok {
		writeJSON(w, http.StatusCreated, resp.User)
	}
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	users, err := s.db.Users(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, users)
}

func (s *Server) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.db.DeleteUser(r.Context(), name); err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", name))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleCreateDevice(w http.ResponseWriter, r *http.Request) {
	var req api.CreateDeviceRequest
	if !decode(w, r, &req) {
		return
	}
	if req.User == "" {
		writeError(w, http.StatusBadRequest, "user is required")
		return
	}
	if err := checkName("device", req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var resp api.CreateDeviceResponse
	var pub wg.Key
	if req.PublicKey != nil {
		pub = *req.PublicKey
	} else {
		priv, err := wg.NewPrivateKey()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		pub, resp.PrivateKey = priv.Public(), &priv
	}
	if err := wg.CheckPublicKey(pub); err != nil {
		writeError(w, http.StatusBadRequest, "public_key: "+err.Error())
		return
	}
	if _, err := s.db.User(r.Context(), req.User); err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", req.User))
		return
	}
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, g := range f.gateways {
		if g.PublicKey == pub {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("public_key is gateway %s's own public key; a device needs a key pair of its own", g.Name))
			return
		}
	}
	gw, location, err := f.choose(req.Location)
	if err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	v4, err := s.pool4.Allocate()
	if err != nil {
		s.poolError(w, r, err, s.pool4)
		return
	}
	v6, err := s.pool6.Allocate()
	if err != nil {
		s.pool4.Release(v4)
		s.poolError(w, r, err, s.pool6)
		return
	}
	d, err := s.db.CreateDevice(r.Context(), store.NewDevice{User: req.User, Name: req.Name, PublicKey: pub, IPv4: v4, IPv6: v6, Location: location})
	if err != nil {
		s.pool4.Release(v4)
		s.pool6.Release(v6)
		s.storeError(w, r, err, fmt.Sprintf("no user named %q", req.User))
		return
	}
	s.notifyAndWait(r.Context())
	resp.Device = d
	resp.Tunnel = s.tunnelInfo(gw, location)
	writeJSON(w, http.StatusCreated, resp)
}

// notifyAndWait wakes the gateways' long polls after a change to the peer
// set and waits (bounded) until the healthy ones have applied it.
func (s *Server) notifyAndWait(ctx context.Context) {
	v, err := s.db.NetmapVersion(ctx)
	s.changed.notify()
	if err == nil {
		s.waitApplied(ctx, v)
	}
}

func (s *Server) poolError(w http.ResponseWriter, r *http.Request, err error, p *ipam.Pool) {
	if errors.Is(err, ipam.ErrExhausted) {
		writeError(w, http.StatusConflict, fmt.Sprintf("tunnel address pool %s is exhausted; delete unused devices or configure a larger pool", p.Prefix()))
		return
	}
	s.fail(w, r, err)
}

// tunnelInfo is the server side of a device's config on gateway gw (nil
// while no gateway has joined).
func (s *Server) tunnelInfo(gw *api.Gateway, location string) api.TunnelInfo {
	t := api.TunnelInfo{DNS: s.cfg.DNS, PersistentKeepalive: 25, Location: location}
	if gw != nil {
		t.Gateway, t.PublicKey, t.Endpoint = gw.Name, gw.PublicKey, gw.Endpoint
	}
	return t
}

// handleDeviceConfig renders the server side of a device's config for a
// location: the device roams with the same key and tunnel addresses,
// because every gateway holds every active device.
func (s *Server) handleDeviceConfig(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	d, err := s.db.Device(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no device with id %d", id))
		return
	}
	if d.Status != api.DeviceActive {
		writeError(w, http.StatusConflict, fmt.Sprintf("device %d is %s", id, d.Status))
		return
	}
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	want := r.URL.Query().Get("location")
	if want == "" {
		want = d.Location
	}
	gw, location, err := f.choose(want)
	if err == nil && gw == nil {
		err = errNoGateway{"no gateway has joined yet"}
	}
	if err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if refused, err := s.needsRecordAt(r.Context(), f, d.User, location); err != nil || refused != "" {
		if err != nil {
			s.fail(w, r, err)
		} else {
			writeError(w, http.StatusConflict, refused)
		}
		return
	}
	if location != d.Location {
		if err := s.db.SetDeviceLocation(r.Context(), id, location); err != nil {
			s.fail(w, r, err)
			return
		}
		d.Location = location
		// The peer is sent again: which duties its sessions carry, and
		// whether it is served, follow its location.
		s.notifyAndWait(r.Context())
	}
	writeJSON(w, http.StatusOK, api.DeviceConfigResponse{Device: d, Tunnel: s.tunnelInfo(gw, location)})
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	entries, err := s.db.AuditLog(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, entries)
}

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if user != "" {
		if _, err := s.db.User(r.Context(), user); err != nil {
			s.storeError(w, r, err, fmt.Sprintf("no user named %q", user))
			return
		}
	}
	devs, err := s.db.Devices(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, devs)
}

func deviceID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	return pathID(w, r, "device")
}

func (s *Server) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	d, err := s.db.RevokeDevice(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no device with id %d", id))
		return
	}
	s.notifyAndWait(r.Context())
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleDeleteDevice(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	d, err := s.db.DeleteDevice(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no device with id %d", id))
		return
	}
	s.pool4.Release(d.IPv4)
	s.pool6.Release(d.IPv6)
	s.changed.notify()
	w.WriteHeader(http.StatusNoContent)
}

const (
	defaultJoinTTL = 24 * time.Hour
	maxJoinTTL     = 365 * 24 * time.Hour
)
