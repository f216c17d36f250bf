package main

// Tests of the meridian binary as a user runs it: built once per test run
// (meridianBin), started as a subprocess in a temporary directory, talking only
// to loopback.
//
// Coverage of the subprocesses: with MERIDIAN_CLI_COVERDIR=DIR set, the
// binary is built with -cover and writes its counters to DIR; read them with
// `go tool covdata percent -i DIR`.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-vpn/meridian/api"
)

// binDir holds the binary, built by the first test that runs it; TestMain
// removes it.
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "meridian-cli-test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// meridianBin builds the meridian binary once per test run, with the
// toolchain and environment of this test (GOTOOLCHAIN among them).
func meridianBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		bin := filepath.Join(binDir, "meridian")
		args := []string{"build", "-o", bin}
		if os.Getenv("MERIDIAN_CLI_COVERDIR") != "" {
			args = append(args, "-cover")
		}
		build := exec.Command(goTool(), append(args, ".")...)
		build.Env = os.Environ()
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building meridian: %v\n%s", err, out)
			return
		}
		binPath = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// goTool is the go command of the toolchain running this test.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cliEnv is the environment of a subprocess: this one's, without the
// MERIDIAN_ variables that would point the admin commands elsewhere, and
// with GOCOVERDIR when coverage is collected.
func cliEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MERIDIAN_") && !strings.HasPrefix(kv, "GOCOVERDIR=") {
			env = append(env, kv)
		}
	}
	if d := os.Getenv("MERIDIAN_CLI_COVERDIR"); d != "" {
		env = append(env, "GOCOVERDIR="+d)
	}
	return env
}

type result struct {
	stdout, stderr string
	code           int
}

// meridian runs the binary in dir with args and waits at most 20 s.
func meridian(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return meridianEnv(t, dir, nil, args...)
}

// meridianEnv is meridian with env added to the environment.
func meridianEnv(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	bin := meridianBin(t) // built before the clock starts
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, append(cliEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("meridian %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("meridian %s did not finish in 20 s", strings.Join(args, " "))
	}
	return result{out.String(), errb.String(), code}
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	r := meridian(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("meridian %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// daemon is a long-running meridian subprocess (up, connect).
type daemon struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	lines  chan string // stdout, line by line
	done   chan struct{}
	err    error // of Wait, once done is closed
}

func startDaemon(t *testing.T, dir string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(meridianBin(t), args...)
	cmd.Dir, cmd.Env = dir, cliEnv()
	d := &daemon{cmd: cmd, stderr: &syncBuffer{}, lines: make(chan string, 100), done: make(chan struct{})}
	cmd.Stderr = d.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
		d.err = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			cmd.Process.Kill() // only this process, by its PID
			<-d.done
		}
	})
	return d
}

// syncBuffer is a buffer safe for the writer goroutine of exec and a
// reader in the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readUntil collects stdout lines until one contains last, for at most
// 20 s.
func (d *daemon) readUntil(t *testing.T, last string) []string {
	t.Helper()
	var got []string
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				<-d.done
				t.Fatalf("exited (%v) before printing %q; stdout:\n%s\nstderr:\n%s", d.err, last, strings.Join(got, "\n"), d.stderr)
			}
			got = append(got, l)
			if strings.Contains(l, last) {
				return got
			}
		case <-deadline:
			t.Fatalf("no %q within 20 s; stdout:\n%s", last, strings.Join(got, "\n"))
		}
	}
}

// stop sends SIGTERM and wants exit status 0 within 15 s.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range d.lines { // drain, so the process never blocks on stdout
		}
	}()
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15 s after SIGTERM; stderr:\n%s", d.stderr)
	}
	if d.err != nil {
		t.Fatalf("after SIGTERM: %v (want exit status 0); stderr:\n%s", d.err, d.stderr)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// freeUDPPort is a UDP port on loopback that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// field is the rest of the line of lines that starts with label (after
// spaces), trimmed; the test fails if there is none.
func field(t *testing.T, lines []string, label string) string {
	t.Helper()
	for _, l := range lines {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), label); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no line %q in:\n%s", label, strings.Join(lines, "\n"))
	return ""
}

// upArgs are the flags of a `meridian up` on loopback only: the API on a
// free port, WireGuard on wgPort, and the exit allowed to reach 127.0.0.1
// (and nothing else the egress policy denies).
func upArgs(wgPort int) []string {
	return []string{"up", "--listen", "127.0.0.1:0", "--listen-port", fmt.Sprint(wgPort),
		"--egress-allow", "127.0.0.1/32", "--log-level", "warn", "--stop-flush", "1s"}
}

// startUp starts `meridian up` in dir and checks what it prints: the
// control API URL, the gateway's WireGuard port, the admin token's path,
// the data directory and the next steps. It returns the daemon and the API
// base URL.
func startUp(t *testing.T, dir string, wgPort int) (*daemon, string) {
	t.Helper()
	d := startDaemon(t, dir, upArgs(wgPort)...)
	lines := d.readUntil(t, "Stop with Ctrl-C")
	if lines[0] != "Meridian is up." {
		t.Errorf("first line %q, want %q", lines[0], "Meridian is up.")
	}
	apiField := field(t, lines, "control API")
	base, _, _ := strings.Cut(apiField, " ")
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "0" || u.Path != "/api/v1" {
		t.Fatalf("control API %q: want http://127.0.0.1:PORT/api/v1", apiField)
	}
	if !strings.Contains(apiField, base+"/openapi.json") {
		t.Errorf("control API line %q does not name the OpenAPI document", apiField)
	}
	data := filepath.Join(dir, "meridian-data")
	if got := field(t, lines, "admin token"); got != filepath.Join(data, "admin-token") {
		t.Errorf("admin token %q, want %q", got, filepath.Join(data, "admin-token"))
	}
	if got := field(t, lines, "data"); got != data {
		t.Errorf("data %q, want %q", got, data)
	}
	if gw := field(t, lines, "gateway"); !strings.Contains(gw, fmt.Sprintf("WireGuard on UDP %d,", wgPort)) {
		t.Errorf("gateway line %q does not name UDP port %d", gw, wgPort)
	}
	for _, want := range []string{"meridian user add alice", "meridian device add --user alice --name laptop --out laptop.conf", "meridian connect --config laptop.conf"} {
		if !strings.Contains(strings.Join(lines, "\n"), want) {
			t.Errorf("next steps lack %q", want)
		}
	}
	// The token file is the admin's secret: mode 0600.
	if fi, err := os.Stat(filepath.Join(data, "admin-token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	resp, err := http.Get(base + "/health")
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health: %s", resp.Status)
	}
	return d, strings.TrimSuffix(base, "/api/v1")
}

// TestUpUserDeviceRestartConnect runs what the quick start tells a new
// operator to do, through the binary: `meridian up`, `user add`,
// `device add --out`, stop with SIGTERM (exit 0 in bounded time), start
// again on the same data directory (the user and device are still there),
// then `meridian connect` with the written config and a page of a loopback
// HTTP server fetched through its SOCKS5 proxy and its HTTP proxy (plain
// and CONNECT). The exit's egress allowance is exactly 127.0.0.1/32:
// 127.0.0.2 stays denied.
func TestUpUserDeviceRestartConnect(t *testing.T) {
	dir := t.TempDir()
	wgPort := freeUDPPort(t)
	up, _ := startUp(t, dir, wgPort)

	// The admin commands find the server and the token in ./meridian-data.
	if out := mustRun(t, dir, "user", "add", "alice"); !strings.Contains(out, `user "alice"`) {
		t.Errorf("user add said %q", out)
	}
	out := mustRun(t, dir, "device", "add", "--user", "alice", "--name", "laptop", "--out", "laptop.conf")
	if !strings.Contains(out, `"laptop" for "alice"`) {
		t.Errorf("device add said %q", out)
	}
	conf := filepath.Join(dir, "laptop.conf")
	fi, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600 (it holds the private key)", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(conf)
	if !strings.Contains(string(b), fmt.Sprintf("Endpoint = 127.0.0.1:%d", wgPort)) || !strings.Contains(string(b), "PrivateKey = ") {
		t.Fatalf("config lacks the endpoint 127.0.0.1:%d or the private key:\n%s", wgPort, b)
	}
	before := devices(t, dir)

	// Stopped and started again, on another API port (--listen
	// 127.0.0.1:0): the gateway of `up` follows its control server's new
	// URL. (Before, `up` refused to start: "gateway already joined".)
	up.stop(t)
	up, _ = startUp(t, dir, wgPort)
	defer up.stop(t)

	after := devices(t, dir)
	if len(after) != 1 || len(before) != 1 || after[0].ID != before[0].ID || after[0].User != "alice" || after[0].Name != "laptop" ||
		after[0].IPv4 != before[0].IPv4 || after[0].PublicKey != before[0].PublicKey || after[0].Status != api.DeviceActive {
		t.Fatalf("devices before the restart %+v, after %+v", before, after)
	}
	var users []api.User
	if err := json.Unmarshal([]byte(mustRun(t, dir, "user", "list", "--json")), &users); err != nil || len(users) != 1 || users[0].Name != "alice" {
		t.Fatalf("users after the restart: %+v (%v)", users, err)
	}
	// From elsewhere, the admin commands find the server and the token
	// through --data, or through MERIDIAN_SERVER and MERIDIAN_TOKEN.
	data := filepath.Join(dir, "meridian-data")
	elsewhere := t.TempDir()
	if out := mustRun(t, elsewhere, "user", "list", "--data", data); !strings.Contains(out, "alice") {
		t.Errorf("user list --data %s: %q", data, out)
	}
	srvURL, _ := os.ReadFile(filepath.Join(data, "control.url"))
	tok, _ := os.ReadFile(filepath.Join(data, "admin-token"))
	env := []string{"MERIDIAN_SERVER=" + strings.TrimSpace(string(srvURL)), "MERIDIAN_TOKEN=" + strings.TrimSpace(string(tok))}
	if r := meridianEnv(t, elsewhere, env, "user", "list"); r.code != 0 || !strings.Contains(r.stdout, "alice") {
		t.Errorf("user list with MERIDIAN_SERVER and MERIDIAN_TOKEN: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	// A wrong token is refused, and the refusal does not echo it.
	r := meridianEnv(t, elsewhere, []string{env[0], "MERIDIAN_TOKEN=wrong-token-4711"}, "user", "list")
	if r.code != 1 || strings.Contains(r.stderr+r.stdout, "wrong-token-4711") || r.stderr == "" {
		t.Errorf("user list with a wrong token: exit %d (want 1), stderr %q", r.code, r.stderr)
	}

	// A page only this test's server knows.
	secret := make([]byte, 16)
	rand.Read(secret)
	page := hex.EncodeToString(secret)
	var hits sync.Map
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		io.WriteString(w, page)
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(handler)
	defer tlsSrv.Close()

	conn := startDaemon(t, dir, "connect", "--config", "laptop.conf", "--socks5", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warn")
	lines := conn.readUntil(t, "HTTP proxy")
	socks, _, _ := strings.Cut(field(t, lines, "SOCKS5 proxy"), " ")
	httpProxy, _, _ := strings.Cut(field(t, lines, "HTTP proxy"), " ")
	if !strings.HasPrefix(lines[0], fmt.Sprintf("tunnel up to 127.0.0.1:%d", wgPort)) {
		t.Errorf("first line %q", lines[0])
	}

	get := func(proxy, target string, client *http.Client) (string, error) {
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: proxy[:strings.Index(proxy, ":")], Host: proxy[strings.Index(proxy, "//")+2:]})}
		if client != nil {
			tr.TLSClientConfig = client.Transport.(*http.Transport).TLSClientConfig
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get(target)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %s", resp.Status, body)
		}
		return string(body), err
	}
	for _, tc := range []struct {
		name, proxy, target string
		client              *http.Client
	}{
		{"socks5", "socks5://" + socks, plain.URL + "/via-socks5", nil},
		{"http proxy, plain", "http://" + httpProxy, plain.URL + "/via-http", nil},
		{"http proxy, CONNECT", "http://" + httpProxy, tlsSrv.URL + "/via-connect", tlsSrv.Client()},
	} {
		// The first handshake may take a moment: a few tries, each bounded.
		var got string
		var err error
		for try := 0; try < 3; try++ {
			if got, err = get(tc.proxy, tc.target, tc.client); err == nil {
				break
			}
		}
		if err != nil || got != page {
			t.Errorf("%s: got %q, %v; want the page %q", tc.name, got, err, page)
		}
		path := tc.target[strings.LastIndex(tc.target, "/"):]
		if _, ok := hits.Load(path); !ok {
			t.Errorf("%s: the server saw no request for %s", tc.name, path)
		}
	}

	// 127.0.0.2 is loopback too, but outside the allowance: the exit
	// refuses it, and the server there sees nothing.
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	denied := &httptest.Server{Listener: l, Config: &http.Server{Handler: handler}}
	denied.Start()
	defer denied.Close()
	if got, err := get("socks5://"+socks, denied.URL+"/denied", nil); err == nil {
		t.Errorf("127.0.0.2 was reached through the tunnel: %q", got)
	}
	if _, ok := hits.Load("/denied"); ok {
		t.Error("the server on 127.0.0.2 saw a request through the tunnel")
	}
	conn.stop(t)

	// A compliance officer's lookups through the binary reach the real
	// server as it parses them: times with any zone, sent in UTC.
	ctok := strings.TrimSpace(mustRun(t, dir, "token", "create", "--role", "compliance", "--name", "officer"))
	now := time.Now()
	ist := time.FixedZone("IST", 5*3600+1800)
	for _, args := range [][]string{
		{"--subscriber", "alice", "--from", now.Add(-time.Hour).In(ist).Format(time.RFC3339), "--to", now.Add(time.Hour).UTC().Format(time.RFC3339)},
		{"--tunnel-ip", after[0].IPv4.String(), "--at", now.In(ist).Format(time.RFC3339Nano)},
	} {
		out := mustRun(t, dir, append([]string{"compliance", "lookup", "--token", ctok, "--case", "C-1", "--json"}, args...)...)
		var res api.LookupResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Case != "C-1" || res.Query == "" {
			t.Errorf("lookup %v: %+v (%v)\n%s", args, res, err, out)
		}
	}
	// The admin token is not a compliance officer's.
	if r := meridian(t, dir, "compliance", "lookup", "--case", "C-1", "--subscriber", "alice", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z"); r.code != 1 || !strings.Contains(r.stderr, "403") {
		t.Errorf("lookup with the admin token: exit %d, %q", r.code, r.stderr)
	}
}

func devices(t *testing.T, dir string) []api.Device {
	t.Helper()
	var devs []api.Device
	out := mustRun(t, dir, "device", "list", "--json")
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		t.Fatalf("device list --json: %v\n%s", err, out)
	}
	return devs
}

// TestExitStatus: what a script sees of the binary: usage errors exit 2,
// help exits 0 and prints the usage on stdout, failures exit 1 with the
// message on stderr.
func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close() // nothing listens there now
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string
		stderr     string
		wantNoData bool
	}{
		{nil, 2, "usage: meridian <command>", "a command is required", true},
		{[]string{"nope"}, 2, "", `unknown command "nope"`, true},
		{[]string{"user", "nope"}, 2, "", `unknown command "user" "nope"`, true},
		{[]string{"help"}, 0, "compliance lookup", "", true},
		{[]string{"user", "help"}, 0, "user add", "", true},
		{[]string{"user", "add", "-h"}, 0, "", "-kind", true},
		{[]string{"version"}, 0, "dev", "", true},
		{[]string{"user", "add"}, 2, "", "want NAME, got 0", true},
		{[]string{"user", "add", "alice", "--kind"}, 2, "", "flag needs an argument: -kind", true},
		{[]string{"device", "add", "--user", "alice"}, 2, "", "--user and --name are required", true},
		{[]string{"device", "revoke", "x1"}, 2, "", `"x1" is not an id`, true},
		{[]string{"user", "list", "--bogus"}, 2, "", "flag provided but not defined: -bogus", true},
		{[]string{"up", "--listen-port", "abc"}, 2, "", "invalid value \"abc\" for flag -listen-port", true},
		{[]string{"user", "list"}, 1, "", "no control server", true},
		{[]string{"user", "list", "--server", closedURL}, 1, "", "no admin token", true},
		{[]string{"user", "list", "--server", closedURL, "--token", "t0ken-x"}, 1, "", "connection refused", true},
		{[]string{"connect"}, 2, "", "--config FILE is required", true},
		{[]string{"connect", "--config", "missing.conf", "--socks5", ""}, 2, "", "give --socks5 and/or --http", true},
		{[]string{"connect", "--config", "missing.conf"}, 1, "", "missing.conf", true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := meridian(t, dir, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", r.stdout, tc.stdout, r.stderr, tc.stderr)
			}
			if strings.Contains(r.stderr, "t0ken-x") {
				t.Errorf("the token is in the message: %q", r.stderr)
			}
			if fileExists(filepath.Join(dir, "meridian-data")) {
				t.Fatal("a command that failed created ./meridian-data")
			}
		})
	}
}
