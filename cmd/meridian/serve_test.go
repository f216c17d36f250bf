package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/gateway"
)

// TestFlagsCheckedBeforeStart: a bad flag of `up`, `control` or `gateway`
// is refused with a message naming it, before anything is opened: the
// data or state directory is not even created. (Before, some were found
// only after the control server had started, and some not at all: the
// server then ran; the context's timeout bounds such a run.)
func TestFlagsCheckedBeforeStart(t *testing.T) {
	ctl := []string{"--listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"control", append([]string{"--ipv4-pool", "127.0.0.0/8"}, ctl...), "--ipv4-pool"},
		{"control", append([]string{"--ipv4-pool", "0.0.0.0/0"}, ctl...), "--ipv4-pool"},
		{"control", append([]string{"--ipv4-pool", "224.0.0.0/16"}, ctl...), "--ipv4-pool"},
		{"control", append([]string{"--ipv6-pool", "::/0"}, ctl...), "--ipv6-pool"},
		{"control", append([]string{"--ipv6-pool", "ff02::/64"}, ctl...), "--ipv6-pool"},
		{"control", []string{"--listen", "127.0.0.1:99999"}, "--listen"},
		{"control", []string{"--listen", "127.0.0.1"}, "--listen"},
		{"control", append([]string{"--case-pattern", "(["}, ctl...), "case pattern"},
		{"control", append([]string{"--incident-webhook", "ftp://example.com/x"}, ctl...), "webhook"},
		{"control", append([]string{"--smtp", "127.0.0.1:25", "--mail-from", "noreply@vpn.example", "--smtp-tls", "maybe"}, ctl...), "TLS mode"},
		{"control", append([]string{"--ict-log-location", "Atlantis"}, ctl...), "ICT log location"},
		{"control", append([]string{"--log-level", "loud"}, ctl...), "--log-level"},
		{"up", append([]string{"--listen-port", "99999"}, ctl...), "--listen-port"},
		{"up", append([]string{"--endpoint", "127.0.0.1:99999", "--listen-port", "47211"}, ctl...), "--endpoint"},
		{"up", append([]string{"--endpoint", "127.0.0.1", "--listen-port", "47211"}, ctl...), "--endpoint"},
		{"up", append([]string{"--exit-ipv4", "2001:db8::1", "--listen-port", "47211", "--endpoint", "127.0.0.1:47211"}, ctl...), "--exit-ipv4"},
		{"up", append([]string{"--port-blocks", "10-5/1", "--listen-port", "47211"}, ctl...), "--port-blocks"},
		{"up", append([]string{"--gateway-metrics", "nowhere", "--listen-port", "47211"}, ctl...), "--gateway-metrics"},
		{"up", append([]string{"--ipv4-pool", "127.0.0.0/8", "--listen-port", "47211"}, ctl...), "--ipv4-pool"},
		{"gateway", []string{"--listen-port", "70000"}, "--listen-port"},
		{"gateway", []string{"--endpoint", "192.0.2.1:0"}, "--endpoint"},
		{"gateway", []string{"--mode", "kernel"}, "--mode"},
		{"gateway", []string{"--metrics", "9586"}, "--metrics"},
		{"gateway", []string{"--control", "ftp://control.example"}, "--control"},
		{"gateway", []string{"--exit-ipv6", "192.0.2.7"}, "--exit-ipv6"},
	} {
		t.Run(tc.cmd+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			var run func(context.Context, []string) error
			args := tc.args
			switch tc.cmd {
			case "control":
				run, args = runControl, append(args, "--data", dir)
			case "up":
				run, args = runUp, append(args, "--data", dir)
			case "gateway":
				run, args = runGateway, append(args, "--state", dir)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := run(ctx, args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("%v is not a usage error (exit status 2)", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the directory was created before the flags were checked (%v)", err)
			}
		})
	}
}

// TestEgressAllowEverythingWarns: --egress-allow 0.0.0.0/0 (or ::/0, or
// any very wide prefix) is said loudly on stderr and in the log.
func TestEgressAllowEverythingWarns(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = f
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No control server is named, so the gateway stops at joining, after
	// the flags are checked and the warnings said.
	runErr := runGateway(ctx, []string{"--state", filepath.Join(t.TempDir(), "gw"), "--listen-port", "47212", "--egress-allow", "0.0.0.0/0", "--egress-allow", "::/0,10.0.0.0/8"})
	os.Stderr = old
	out, _ := os.ReadFile(f.Name())
	if runErr == nil {
		t.Fatal("the gateway started without a control server")
	}
	for _, want := range []string{"meridian: WARNING: --egress-allow 0.0.0.0/0", "meridian: WARNING: --egress-allow ::/0", `level=WARN msg="wide egress allowance"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "10.0.0.0/8 lets") {
		t.Errorf("a narrow allowance warned:\n%s", out)
	}
}

// TestUpRunsOneClockMonitor: 'meridian up' is one node, so it has one
// clock monitor, run by the control server; the gateway stamps its
// records from the same one and does not run it again. (Before, up made a
// second monitor for the gateway, querying the same sources twice and
// stamping the two roles' records from different states.)
func TestUpRunsOneClockMonitor(t *testing.T) {
	var cf controlFlags
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	cf.register(fs, "127.0.0.1:0")
	if err := fs.Parse([]string{"--data", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cf.config(0)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Clock == nil {
		t.Fatal("the control server has no clock monitor")
	}
	var gcfg gateway.Config
	shareClock(&cfg, &gcfg)
	if gcfg.Clock != cfg.Clock || !gcfg.ClockRunByControl {
		t.Fatalf("the gateway of up has its own monitor (%p, control's %p) or runs it (%v)", gcfg.Clock, cfg.Clock, !gcfg.ClockRunByControl)
	}
}
