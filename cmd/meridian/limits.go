package main

import (
	"flag"
	"fmt"
	"syscall"
	"time"

	"github.com/meridian-vpn/meridian/control"
)

// File descriptors: the API listener and the userspace exit each get a
// budget of their own, so a flood of API connections cannot take the
// sockets the exit needs for subscribers' traffic, nor the other way round.
// fdReserve are kept for everything else: the database, logs, WireGuard's
// sockets, the metrics listener.
const (
	fdReserve           = 256
	defaultExitMaxConns = 8192 // the exit's own default (exit.Config.MaxConns)
	metricsMaxConns     = 64   // the gateway metrics listener
)

// raiseFileLimit raises the soft limit of open files to the hard limit
// (Go's runtime does so too, but not always to the last descriptor) and
// returns it.
func raiseFileLimit() uint64 {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 1024
	}
	if r.Cur < r.Max {
		n := r
		n.Cur = n.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n) == nil {
			r = n
		}
	}
	return r.Cur
}

// fdBudget gives the API (when api) and the exit (when exit) their
// connection caps: a configured cap as it is, a cap left at 0 its default
// or its share of the file descriptor limit, whichever is smaller (a
// quarter for the API and a half for the exit when both run, else a half).
// Configured caps that do not fit within the limit are an error.
func fdBudget(limit uint64, apiConns, exitConns int, api, exit bool) (int, int, error) {
	if limit < 2*fdReserve {
		return 0, 0, fmt.Errorf("the open files limit is %d; Meridian needs at least %d (raise the hard limit, e.g. LimitNOFILE= in systemd)", limit, 2*fdReserve)
	}
	avail := int(min(limit-fdReserve, 1<<30))
	apiShare, exitShare := avail/2, avail/2
	if api && exit {
		apiShare = avail / 4
	}
	if api && apiConns == 0 {
		apiConns = min(control.DefaultMaxConns, apiShare)
	}
	if exit && exitConns == 0 {
		exitConns = min(defaultExitMaxConns, exitShare)
	}
	if !api {
		apiConns = 0
	}
	if !exit {
		exitConns = 0
	}
	if apiConns < 0 || exitConns < 0 {
		return 0, 0, fmt.Errorf("connection caps must not be negative")
	}
	if apiConns+exitConns > avail {
		return 0, 0, fmt.Errorf("--api-max-conns %d and --exit-max-conns %d exceed the open files limit %d less %d kept for the rest", apiConns, exitConns, limit, fdReserve)
	}
	return apiConns, exitConns, nil
}

// limitFlags are the API listener's limits (control.Limits).
type limitFlags struct {
	maxConns, perSource int
	bodyTimeout         time.Duration
	bodyMinRate         int
}

func (f *limitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.maxConns, "api-max-conns", 0, fmt.Sprintf("open API connections at most (default %d, or a share of the open files limit when that is smaller)", control.DefaultMaxConns))
	fs.IntVar(&f.perSource, "api-max-conns-per-source", control.DefaultMaxConnsPerSource, "open API connections from one address (IPv6: one /64) at most; trusted proxies are exempt")
	fs.DurationVar(&f.bodyTimeout, "api-body-timeout", control.DefaultBodyTimeout, "time a request body may take, plus 1 s per --api-body-min-rate bytes received; a slower one is cut off and its connection closed")
	fs.IntVar(&f.bodyMinRate, "api-body-min-rate", control.DefaultBodyMinRate, "bytes per second a request body must average past --api-body-timeout")
}

func (f *limitFlags) limits(maxConns int) (control.Limits, error) {
	if f.perSource <= 0 || f.bodyTimeout <= 0 || f.bodyMinRate <= 0 {
		return control.Limits{}, fmt.Errorf("--api-max-conns-per-source, --api-body-timeout and --api-body-min-rate must be positive")
	}
	return control.Limits{MaxConns: maxConns, MaxConnsPerSource: f.perSource, BodyTimeout: f.bodyTimeout, BodyMinRate: f.bodyMinRate}, nil
}
