package main

import (
	"strings"
	"testing"

	"github.com/meridian-vpn/meridian/control"
)

func TestFDBudget(t *testing.T) {
	for _, c := range []struct {
		limit             uint64
		apiIn, exitIn     int
		api, exit         bool
		wantAPI, wantExit int
		wantErr           string
	}{
		// meridian up with 20,000 descriptors: both defaults fit, with room.
		{limit: 20000, api: true, exit: true, wantAPI: control.DefaultMaxConns, wantExit: defaultExitMaxConns},
		// A small limit is shared: a quarter to the API, a half to the exit.
		{limit: 1024, api: true, exit: true, wantAPI: 192, wantExit: 384},
		{limit: 1024, api: true, wantAPI: 384},
		{limit: 1024, exit: true, wantExit: 384},
		{limit: 20000, apiIn: 100, exitIn: 200, api: true, exit: true, wantAPI: 100, wantExit: 200},
		{limit: 20000, apiIn: 10000, exitIn: 10000, api: true, exit: true, wantErr: "exceed the open files limit 20000"},
		{limit: 300, api: true, wantErr: "needs at least 512"},
	} {
		a, e, err := fdBudget(c.limit, c.apiIn, c.exitIn, c.api, c.exit)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%+v: got %v, want an error containing %q", c, err, c.wantErr)
			}
			continue
		}
		if err != nil || a != c.wantAPI || e != c.wantExit {
			t.Errorf("%+v: got %d, %d, %v", c, a, e, err)
		}
		if uint64(a+e+fdReserve) > c.limit {
			t.Errorf("%+v: %d + %d + %d exceed the limit", c, a, e, fdReserve)
		}
	}
}
