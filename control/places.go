package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/internal/check"
	"github.com/meridian-vpn/meridian/jurisdiction"
	"github.com/meridian-vpn/meridian/store"
)

// defaultCapacity is the active-peer count that makes a gateway 100 %
// loaded when its place does not say.
const defaultCapacity = 1000

// actor names the caller in the audit log: the admin token's id and name,
// never a person's data.
func actor(ctx context.Context) string {
	p := principalOf(ctx)
	if p.admin != nil {
		return "admin:" + p.admin.ID + " (" + p.admin.Name + ")"
	}
	return "system"
}

// fleet is a consistent view of the gateways, their places, the locations
// and the jurisdictions, read once per decision.
type fleet struct {
	gateways      []api.Gateway // with place, health, load and service state filled in
	locations     []api.Location
	jurisdictions jurisdiction.Jurisdictions
	established   []jurisdiction.Country // where the operator is established
	profiles      map[string]jurisdiction.Profile
}

func (f *fleet) jurisdictionOf(c string) jurisdiction.Jurisdiction {
	return f.jurisdictions.Of(jurisdiction.Country(c))
}

func (f *fleet) gateway(name string) *api.Gateway {
	for i := range f.gateways {
		if f.gateways[i].Name == name {
			return &f.gateways[i]
		}
	}
	return nil
}

// loadFleet reads everything that decides service, duties and choices.
func (s *Server) loadFleet(ctx context.Context) (*fleet, error) {
	f := &fleet{jurisdictions: jurisdiction.Jurisdictions{}}
	var err error
	if f.profiles, err = s.profiles(ctx); err != nil {
		return nil, err
	}
	js, err := s.db.Jurisdictions(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range js {
		c := jurisdiction.Country(j.Country)
		f.jurisdictions[c] = jurisdiction.Jurisdiction{Country: c, Profile: j.Profile, Stance: jurisdiction.Stance(j.Stance), Triggers: triggersOf(j.Triggers)}
	}
	est, err := s.db.Established(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range est {
		f.established = append(f.established, jurisdiction.Country(c))
	}
	if f.gateways, err = s.db.Gateways(ctx); err != nil {
		return nil, err
	}
	places, err := s.db.Places(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for i := range f.gateways {
		g := &f.gateways[i]
		st := s.status[g.Name]
		g.LastSeen, g.Load = st.lastSeen, st.report
		g.Healthy = !st.lastSeen.IsZero() && time.Since(st.lastSeen) < s.cfg.HeartbeatTimeout
		g.Place = places[g.Name]
		g.InService = true
		if g.Place != nil && !f.jurisdictionOf(g.Place.PhysicalCountry).AllowsPresence() {
			g.InService = false
			g.OutOfServiceReason = fmt.Sprintf("%s is virtual-only: no physical presence there", g.Place.PhysicalCountry)
		}
	}
	s.mu.Unlock()
	if f.locations, err = s.db.Locations(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// profiles are the built-in duty profiles plus the operator's own.
func (s *Server) profiles(ctx context.Context) (map[string]jurisdiction.Profile, error) {
	out := jurisdiction.Builtin()
	stored, err := s.db.Profiles(ctx)
	if err != nil {
		return nil, err
	}
	for name, body := range stored {
		p, err := jurisdiction.ParseProfileJSON(body)
		if err != nil {
			return nil, fmt.Errorf("stored duty profile %q: %w", name, err)
		}
		out[name] = p
	}
	return out, nil
}

// loadPercent is a gateway's load, 0-100: active peers over capacity.
func loadPercent(g api.Gateway) int {
	capacity := defaultCapacity
	if g.Place != nil && g.Place.Capacity > 0 {
		capacity = g.Place.Capacity
	}
	return min(100, int(math.Round(100*float64(g.Load.ActivePeers)/float64(capacity))))
}

// usable reports whether new sessions may be sent to g.
func usable(g api.Gateway) bool { return g.Healthy && g.InService }

// refreshService recomputes which gateways are out of service and wakes
// their long polls, so a virtual-only stance empties them at once.
func (s *Server) refreshService(ctx context.Context) error {
	f, err := s.loadFleet(ctx)
	if err != nil {
		return err
	}
	out := map[string]bool{}
	for _, g := range f.gateways {
		if !g.InService {
			out[g.Name] = true
		}
	}
	s.mu.Lock()
	s.outOfService = out
	s.mu.Unlock()
	s.changed.notify()
	return nil
}

func (s *Server) inService(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.outOfService[name]
}

var countryFields = []string{"physical_country", "advertised_country"}

// checkPlace validates a declared place; it returns a clear message.
func checkPlace(p *api.Place) error {
	for i, c := range []*string{&p.PhysicalCountry, &p.AdvertisedCountry} {
		if *c == "" && i == 1 {
			*c = p.PhysicalCountry // exit addresses geolocate where the machine stands
		}
		cc, err := jurisdiction.ParseCountry(*c)
		if err != nil {
			return fmt.Errorf("%s: %v", countryFields[i], err)
		}
		*c = string(cc)
	}
	switch p.Ownership {
	case api.Owned, api.Rented:
	case "":
		return errors.New(`ownership is required: "owned" or "rented"`)
	default:
		return errors.New(`ownership must be "owned" or "rented"`)
	}
	if p.Capacity == 0 {
		p.Capacity = defaultCapacity
	}
	if p.Capacity < 0 || p.Capacity > 10_000_000 {
		return errors.New("capacity must be between 1 and 10000000 active peers")
	}
	for i, e := range p.EntryEndpoints {
		if err := check.Endpoint(e); err != nil {
			return fmt.Errorf("entry endpoint %d %v", i+1, err)
		}
	}
	for _, a := range p.ExitAddresses {
		if !a.IsValid() || a.IsUnspecified() {
			return errors.New("exit addresses must be IP addresses")
		}
	}
	for _, f := range []struct{ name, v string }{{"city", p.City}, {"provider", p.Provider}} {
		if len(f.v) > 100 || check.Text(f.v, false) != nil {
			return fmt.Errorf("%s must be at most 100 printable characters on one line, without invisible or bidirectional control characters", f.name)
		}
	}
	return nil
}

func (s *Server) handleSetPlace(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("name")
	if node == "" {
		node = api.ControlNode
	} else if ok, err := s.db.GatewayExists(r.Context(), node); err != nil {
		s.fail(w, r, err)
		return
	} else if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no gateway named %q", node))
		return
	}
	var p api.Place
	if !decode(w, r, &p) {
		return
	}
	if err := checkPlace(&p); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if j := f.jurisdictionOf(p.PhysicalCountry); !j.AllowsPresence() {
		writeError(w, http.StatusConflict, fmt.Sprintf("%s (%s) is virtual-only: the operator does not stand there physically, so %s cannot be placed there; serve %s from a gateway in another country, or change the stance with 'meridian jurisdiction set %s --stance comply'",
			p.PhysicalCountry, jurisdiction.Country(p.PhysicalCountry).Name(), node, p.PhysicalCountry, p.PhysicalCountry))
		return
	}
	saved, err := s.db.SetPlace(r.Context(), actor(r.Context()), node, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.refreshService(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, saved)
}

func (s *Server) handleControlPlace(w http.ResponseWriter, r *http.Request) {
	p, err := s.db.Place(r.Context(), api.ControlNode)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "the control server's place has not been declared; set it with 'meridian control set-place'")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

var locationCodeRE = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{1,15}$`)

func (s *Server) handleCreateLocation(w http.ResponseWriter, r *http.Request) {
	var l api.Location
	if !decode(w, r, &l) {
		return
	}
	l.Code = strings.ToUpper(l.Code)
	if !locationCodeRE.MatchString(l.Code) {
		writeError(w, http.StatusBadRequest, "location code must be 2-16 letters, digits or '-', e.g. IN or IN-MUM")
		return
	}
	c, err := jurisdiction.ParseCountry(l.Country)
	if err != nil {
		writeError(w, http.StatusBadRequest, "country: "+err.Error())
		return
	}
	l.Country = string(c)
	if len(l.Gateways) == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("location %s needs at least one gateway to serve it", l.Code))
		return
	}
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, name := range l.Gateways {
		g := f.gateway(name)
		switch {
		case g == nil:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("no gateway named %q", name))
			return
		case g.Place == nil:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("gateway %q has no declared place; declare it first with 'meridian gateway set-place %s'", name, name))
			return
		case !g.InService:
			writeError(w, http.StatusConflict, fmt.Sprintf("gateway %q is out of service: %s", name, g.OutOfServiceReason))
			return
		}
	}
	if err := s.db.CreateLocation(r.Context(), actor(r.Context()), l); err != nil {
		s.storeError(w, r, err, "")
		return
	}
	writeJSON(w, http.StatusCreated, l)
}

func (s *Server) handleLocations(w http.ResponseWriter, r *http.Request) {
	ls, err := s.db.Locations(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ls)
}

func (s *Server) handleRemoveLocation(w http.ResponseWriter, r *http.Request) {
	code := strings.ToUpper(r.PathValue("code"))
	if err := s.db.RemoveLocation(r.Context(), actor(r.Context()), code); err != nil {
		s.storeError(w, r, err, fmt.Sprintf("no location %q", code))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleJurisdictions(w http.ResponseWriter, r *http.Request) {
	js, err := s.db.Jurisdictions(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, js)
}

// proposedJurisdiction reads a change of country c's jurisdiction from the
// request: what is left out stays as it is. It answers the request itself
// when the change is bad.
func (s *Server) proposedJurisdiction(w http.ResponseWriter, r *http.Request, f *fleet) (api.Jurisdiction, jurisdiction.Jurisdiction, bool) {
	var req api.Jurisdiction
	c, err := jurisdiction.ParseCountry(r.PathValue("country"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return req, jurisdiction.Jurisdiction{}, false
	}
	if !decode(w, r, &req) {
		return req, jurisdiction.Jurisdiction{}, false
	}
	if req.Country != "" && !strings.EqualFold(req.Country, string(c)) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body names country %q but the path names %s", req.Country, c))
		return req, jurisdiction.Jurisdiction{}, false
	}
	cur := f.jurisdictionOf(string(c))
	if req.Profile == "" {
		req.Profile = cur.Profile
	}
	if req.Stance == "" {
		req.Stance = string(cur.Stance)
	}
	stance, err := jurisdiction.ParseStance(req.Stance)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return req, jurisdiction.Jurisdiction{}, false
	}
	triggers := cur.Triggers
	if len(req.Triggers) > 0 {
		if triggers, err = jurisdiction.ParseTriggers(strings.Join(req.Triggers, ",")); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return req, jurisdiction.Jurisdiction{}, false
		}
	}
	if len(triggers) == 0 {
		triggers = []jurisdiction.Trigger{jurisdiction.Placement}
	}
	if _, ok := f.profiles[req.Profile]; !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown duty profile %q; known: %s", req.Profile, strings.Join(sortedNames(f.profiles), ", ")))
		return req, jurisdiction.Jurisdiction{}, false
	}
	req.Country, req.Stance, req.Triggers = string(c), string(stance), strings.Split(jurisdiction.FormatTriggers(triggers), ",")
	return req, jurisdiction.Jurisdiction{Country: c, Profile: req.Profile, Stance: stance, Triggers: triggers}, true
}

func (s *Server) handleSetJurisdiction(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, j, ok := s.proposedJurisdiction(w, r, f)
	if !ok {
		return
	}
	c := j.Country
	// A virtual-only stance takes the gateways standing there out of
	// service. Refuse it if that would leave a location with no gateway.
	var leaving []string
	if j.Stance == jurisdiction.VirtualOnly {
		for _, g := range f.gateways {
			if g.Place != nil && g.Place.PhysicalCountry == string(c) {
				leaving = append(leaving, g.Name)
			}
		}
		if cp, err := s.db.Place(r.Context(), api.ControlNode); err == nil && cp.PhysicalCountry == string(c) {
			writeError(w, http.StatusConflict, fmt.Sprintf("the control server itself stands in %s; move it (meridian control set-place) before making %s virtual-only", c, c))
			return
		}
		var orphans []string
		for _, l := range f.locations {
			left := 0
			for _, name := range l.Gateways {
				if g := f.gateway(name); g != nil && g.InService && !slices.Contains(leaving, name) {
					left++
				}
			}
			if left == 0 {
				orphans = append(orphans, l.Code)
			}
		}
		if len(orphans) > 0 {
			writeError(w, http.StatusConflict, fmt.Sprintf("making %s virtual-only would take %s out of service and leave location(s) %s with no gateway; add a gateway from another country to them first, or remove them",
				c, strings.Join(leaving, ", "), strings.Join(orphans, ", ")))
			return
		}
	}
	p, ok := s.checkDutyChange(w, r, f, f.withJurisdiction(j), req.Confirm)
	if !ok {
		return
	}
	saved, err := s.db.SetJurisdiction(r.Context(), actor(r.Context()), api.Jurisdiction{Country: string(c), Profile: req.Profile, Stance: req.Stance, Triggers: req.Triggers, Confirm: req.Confirm})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.refreshService(r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	saved.OutOfService, saved.Confirm, saved.Preview = leaving, false, &p
	writeJSON(w, http.StatusOK, saved)
}

func sortedNames(m map[string]jurisdiction.Profile) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *Server) handleProfiles(w http.ResponseWriter, r *http.Request) {
	ps, err := s.profiles(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) handleSetProfile(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBody))
		return
	}
	p, err := jurisdiction.ParseProfileJSON(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if p.Name != r.PathValue("name") {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("profile body is named %q but the path names %q", p.Name, r.PathValue("name")))
		return
	}
	canonical, _ := json.Marshal(p)
	if err := s.db.SaveProfile(r.Context(), actor(r.Context()), p.Name, canonical); err != nil {
		s.fail(w, r, err)
		return
	}
	s.changed.notify() // duties may have changed: gateways' long polls check
	writeJSON(w, http.StatusOK, p)
}

// explain answers "which duties apply here, and why" for a node and,
// optionally, a tenant kind.
func (s *Server) handleExplain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	node := q.Get("gateway")
	if node == "" {
		node = api.ControlNode
	}
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var place *api.Place
	if node == api.ControlNode {
		if place, err = s.db.Place(r.Context(), node); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
	} else if g := f.gateway(node); g != nil {
		place = g.Place
	} else {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no gateway named %q", node))
		return
	}
	ex := api.Explanation{Node: node, Duties: []api.Duty{}}
	if u := q.Get("user"); u != "" {
		user, err := s.db.User(r.Context(), u)
		if err != nil {
			s.storeError(w, r, err, fmt.Sprintf("no user named %q", u))
			return
		}
		ex.TenantKind = user.Kind
	} else if k := q.Get("kind"); k != "" {
		ex.TenantKind = api.TenantKind(k)
	}
	if place == nil {
		ex.Text = fmt.Sprintf("%s has no declared place, so no duty can be decided for it; declare where it stands with 'meridian %s set-place'.", node, map[bool]string{true: "control", false: "gateway"}[node == api.ControlNode])
		writeJSON(w, http.StatusOK, ex)
		return
	}
	j := f.jurisdictionOf(place.PhysicalCountry)
	jn := jurisdiction.Node{Name: node, Physical: jurisdiction.Country(place.PhysicalCountry)}
	loc := strings.ToUpper(q.Get("location"))
	if loc != "" && f.location(loc) == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no location %q", loc))
		return
	}
	var duties []jurisdiction.Duty
	switch {
	case ex.TenantKind != "":
		duties, err = jurisdiction.Effective(f.service(node, place.PhysicalCountry, loc, ex.TenantKind), f.jurisdictions, f.profiles)
	case loc != "":
		duties, err = jurisdiction.NodeDuties(f.service(node, place.PhysicalCountry, loc, ""), f.jurisdictions, f.profiles)
	default:
		duties, err = f.nodeDuties(node, place)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ex.PhysicalCountry, ex.Profile, ex.Stance = place.PhysicalCountry, j.Profile, string(j.Stance)
	for _, d := range duties {
		ex.Duties = append(ex.Duties, api.Duty{Kind: string(d.Kind), Why: d.Why, Detail: d.Detail})
	}
	ex.Text = jurisdiction.Explain(jn, j, ex.TenantKind, duties)
	for _, d := range duties {
		if d.Kind == jurisdiction.SubscriberRecords && s.cfg.Signup {
			ex.Text += jurisdiction.UnconfirmedSignups(d, s.signupExpiry())
		}
	}
	writeJSON(w, http.StatusOK, ex)
}

// serverList builds the clients' server list from the fleet; need
// (fleet.recordNeed) says which locations keep subscriber records of
// consumers, which the list tells them before they connect.
func serverList(f *fleet, need map[string]tenantKinds) api.ServerList {
	sl := api.ServerList{Locations: []api.ServerLocation{}}
	for _, l := range f.locations {
		country := jurisdiction.Country(l.Country)
		loc := api.ServerLocation{Code: l.Code, Country: l.Country, CountryName: country.Name(), City: l.City,
			HostCountries: []string{}, Features: []string{"ipv4", "ipv6"}, Servers: []api.Server{}}
		total, healthy := 0, 0
		for _, name := range l.Gateways {
			g := f.gateway(name)
			if g == nil || !g.InService || g.Place == nil {
				continue
			}
			host := g.Place.PhysicalCountry
			if !slices.Contains(loc.HostCountries, host) {
				loc.HostCountries = append(loc.HostCountries, host)
			}
			if host != l.Country {
				loc.Virtual = true
			}
			srv := api.Server{Name: g.Name, Endpoint: g.Endpoint, PublicKey: g.PublicKey, HostCountry: host, Load: loadPercent(*g), Healthy: g.Healthy}
			if srv.Healthy {
				total += srv.Load
				healthy++
			}
			loc.Servers = append(loc.Servers, srv)
		}
		slices.Sort(loc.HostCountries)
		loc.Label = country.Name()
		if loc.City != "" {
			loc.Label += ", " + loc.City
		}
		if loc.Virtual {
			var hosts []string
			for _, h := range loc.HostCountries {
				hosts = append(hosts, jurisdiction.Country(h).Name())
			}
			loc.Label += " — virtual, served from " + strings.Join(hosts, " and ")
			loc.Features = append(loc.Features, "virtual")
		}
		if need[l.Code].consumer {
			loc.SubscriberRecords = true
			loc.Label += " — subscriber records kept"
			loc.Features = append(loc.Features, "subscriber-records")
		}
		if healthy > 0 {
			loc.Load = int(math.Round(float64(total) / float64(healthy)))
			loc.Score = 100 - loc.Load
		} else {
			loc.Load = 100
		}
		sl.Locations = append(sl.Locations, loc)
	}
	return sl
}

// writeCached answers with v and a strong ETag of its encoding, or 304 if
// the client already has it: polling an unchanged list costs no body.
func writeCached(w http.ResponseWriter, r *http.Request, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding failed")
		return
	}
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) handleServerList(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	need, _, _, err := f.recordNeed()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeCached(w, r, serverList(f, need))
}

func (s *Server) handleLoads(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	loads := api.Loads{Locations: map[string]int{}, Servers: map[string]int{}}
	for _, l := range serverList(f, nil).Locations {
		loads.Locations[l.Code] = l.Load
		for _, srv := range l.Servers {
			loads.Servers[srv.Name] = srv.Load
		}
	}
	writeCached(w, r, loads)
}

// errNoGateway says why no gateway could be chosen.
type errNoGateway struct{ msg string }

func (e errNoGateway) Error() string { return e.msg }

// choose picks the gateway a device's config points at: for a location
// code, its least-loaded healthy in-service gateway; for "auto", the
// least-loaded healthy one of any location; for "", any usable gateway
// (none if no gateway has joined yet, which is not an error).
func (f *fleet) choose(location string) (*api.Gateway, string, error) {
	var candidates []string
	switch location {
	case "":
		for _, g := range f.gateways {
			candidates = append(candidates, g.Name)
		}
	case "auto":
		for _, l := range f.locations {
			candidates = append(candidates, l.Gateways...)
		}
		if len(candidates) == 0 {
			return f.choose("")
		}
	default:
		var loc *api.Location
		for i := range f.locations {
			if f.locations[i].Code == strings.ToUpper(location) {
				loc = &f.locations[i]
			}
		}
		if loc == nil {
			return nil, "", errNoGateway{fmt.Sprintf("no location %q; see 'meridian location list'", location)}
		}
		location = loc.Code
		candidates = loc.Gateways
	}
	var best *api.Gateway
	for _, name := range candidates {
		g := f.gateway(name)
		if g == nil || !usable(*g) {
			continue
		}
		if best == nil || lessLoaded(*g, *best) {
			best = g
		}
	}
	if best == nil && location == "" {
		// Right after a control server restart no gateway has reported
		// yet: fall back to a joined, in-service one rather than none.
		for i := range f.gateways {
			if g := &f.gateways[i]; g.InService && (best == nil || lessLoaded(*g, *best)) {
				best = g
			}
		}
		if best == nil {
			return nil, "", nil
		}
	}
	if best == nil {
		return nil, "", errNoGateway{fmt.Sprintf("no healthy gateway serves location %q right now", location)}
	}
	if location == "auto" {
		location = ""
		for _, l := range f.locations {
			if slices.Contains(l.Gateways, best.Name) {
				location = l.Code
				break
			}
		}
	}
	return best, location, nil
}

func lessLoaded(a, b api.Gateway) bool {
	la, lb := loadFraction(a), loadFraction(b)
	if la != lb {
		return la < lb
	}
	return a.Name < b.Name
}

func loadFraction(g api.Gateway) float64 {
	capacity := defaultCapacity
	if g.Place != nil && g.Place.Capacity > 0 {
		capacity = g.Place.Capacity
	}
	return float64(g.Load.ActivePeers) / float64(capacity)
}
