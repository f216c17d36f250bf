package control

import (
	"fmt"
	"slices"

	"github.com/meridian-vpn/meridian/api"
	"github.com/meridian-vpn/meridian/jurisdiction"
)

// location returns the location coded code, nil if there is none.
func (f *fleet) location(code string) *api.Location {
	for i := range f.locations {
		if f.locations[i].Code == code {
			return &f.locations[i]
		}
	}
	return nil
}

// service is the jurisdiction.Service of a session of tenant kind k on
// node, standing in physical, on location code ("" or a removed location:
// none known).
func (f *fleet) service(node, physical, code string, k api.TenantKind) jurisdiction.Service {
	s := jurisdiction.Service{Node: jurisdiction.Node{Name: node, Physical: jurisdiction.Country(physical)}, Established: f.established, Tenant: k}
	if l := f.location(code); l != nil {
		s.Location = &jurisdiction.Location{Code: l.Code, Country: jurisdiction.Country(l.Country)}
	}
	return s
}

// duties is jurisdiction.Effective for a session of tenant kind k on
// gateway g (which must have a place) at location code.
func (f *fleet) duties(g *api.Gateway, code string, k api.TenantKind) ([]jurisdiction.Duty, error) {
	ds, err := jurisdiction.Effective(f.service(g.Name, g.Place.PhysicalCountry, code, k), f.jurisdictions, f.profiles)
	if err != nil {
		return nil, fmt.Errorf("duties of gateway %s: %w", g.Name, err)
	}
	return ds, nil
}

// nodeDuties are the duties of node, standing at place, whatever its
// tenants: those of service on no location plus those of every location
// it serves (a market reading brings a served location's country's node
// duties to it), each kind of each country once.
func (f *fleet) nodeDuties(node string, place *api.Place) ([]jurisdiction.Duty, error) {
	codes := []string{""}
	for _, l := range f.locations {
		if slices.Contains(l.Gateways, node) {
			codes = append(codes, l.Code)
		}
	}
	var all []jurisdiction.Duty
	for _, code := range codes {
		ds, err := jurisdiction.NodeDuties(f.service(node, place.PhysicalCountry, code, ""), f.jurisdictions, f.profiles)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if !slices.ContainsFunc(all, func(a jurisdiction.Duty) bool { return a.Kind == d.Kind && a.Country == d.Country }) {
				all = append(all, d)
			}
		}
	}
	return all, nil
}

// tenantKinds says, per tenant kind, whether something applies.
type tenantKinds struct{ consumer, enterprise bool }

func (k tenantKinds) of(t api.TenantKind) bool {
	return t == api.Consumer && k.consumer || t == api.Enterprise && k.enterprise
}

func (k *tenantKinds) set(t api.TenantKind) {
	if t == api.Consumer {
		k.consumer = true
	} else {
		k.enterprise = true
	}
}

var tenantKindsAll = []api.TenantKind{api.Consumer, api.Enterprise}

// recordNeed says, by location code ("" for devices on no location), for
// which tenant kinds service there needs a subscriber record: some
// in-service gateway serving it owes subscriber records for such sessions.
// A device of an account without one loses that location.
func (f *fleet) recordNeed() (map[string]tenantKinds, []string, error) {
	need := map[string]tenantKinds{}
	var why []string
	add := func(g *api.Gateway, code string) error {
		if g == nil || g.Place == nil || !g.InService {
			return nil
		}
		for _, k := range tenantKindsAll {
			ds, err := f.duties(g, code, k)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if d.Kind == jurisdiction.SubscriberRecords {
					n := need[code]
					n.set(k)
					need[code] = n
					if w := fmt.Sprintf("gateway %s: %s", g.Name, d.Why); !slices.Contains(why, w) {
						why = append(why, w)
					}
				}
			}
		}
		return nil
	}
	for i := range f.gateways {
		if err := add(&f.gateways[i], ""); err != nil {
			return nil, nil, err
		}
	}
	for _, l := range f.locations {
		for _, name := range l.Gateways {
			if err := add(f.gateway(name), l.Code); err != nil {
				return nil, nil, err
			}
		}
	}
	return need, why, nil
}

// triggersOf converts stored trigger names; Effective checks them.
func triggersOf(names []string) []jurisdiction.Trigger {
	var ts []jurisdiction.Trigger
	for _, n := range names {
		ts = append(ts, jurisdiction.Trigger(n))
	}
	return ts
}
