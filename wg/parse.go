package wg

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// MaxConfigSize is the largest wg-quick file ParseConfig accepts.
const MaxConfigSize = 1 << 20

// ParseError is the error ParseConfig returns. It never holds the value of
// a key (private, public or preshared): only the line and what is wrong.
type ParseError struct {
	Line int // 1-based line number; 0 when the problem is the file as a whole
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return "wg-quick config: " + e.Msg
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

// Canonical key names. The file format matches them case-insensitively.
var interfaceKeys = map[string]string{
	"privatekey": "PrivateKey",
	"address":    "Address",
	"dns":        "DNS",
	"mtu":        "MTU",
	"listenport": "ListenPort",
}

// ignoredInterfaceKeys are [Interface] keys that wg-quick (or wg, for FwMark)
// understands but Config does not model. ParseConfig accepts and drops them.
var ignoredInterfaceKeys = map[string]string{
	"table":      "Table",
	"preup":      "PreUp",
	"postup":     "PostUp",
	"predown":    "PreDown",
	"postdown":   "PostDown",
	"saveconfig": "SaveConfig",
	"fwmark":     "FwMark",
}

var peerKeys = map[string]string{
	"publickey":           "PublicKey",
	"presharedkey":        "PresharedKey",
	"endpoint":            "Endpoint",
	"allowedips":          "AllowedIPs",
	"persistentkeepalive": "PersistentKeepalive",
}

// multiKeys may appear more than once in a section; their values accumulate.
var multiKeys = map[string]bool{"Address": true, "DNS": true, "AllowedIPs": true}

// ParseConfig parses a wg-quick configuration file.
//
// It reads what wg-quick(8) and wg(8) read: section names and keys match
// case-insensitively; sections may come in any order; everything from '#' to
// the end of a line is a comment, and so is a line whose first non-blank
// character is ';'; blank lines, blanks around '=', CRLF line ends and a
// leading UTF-8 byte order mark are fine. List values (Address, DNS,
// AllowedIPs) are separated by commas and/or blanks, skip empty items, and
// accumulate when the key is repeated.
//
// Addresses and allowed IPs without a prefix length get /32 or /128; host bits
// are kept as written (Address = 10.0.0.2/24 is an interface address in a /24).
// Addresses are returned IPv4 first, then IPv6, each in file order, as Render
// writes them. DNS entries that are IP addresses go to DNS, other names to
// DNSSearch, as wg-quick sorts them.
//
// The wg-quick keys Table, PreUp, PostUp, PreDown, PostDown and SaveConfig,
// and wg's FwMark, are accepted in [Interface] and dropped: Config does not
// model them and Render does not write them. Any other key or section is an
// error. So are a single-valued key given twice in a section, a missing
// [Interface], PrivateKey or peer PublicKey, two peers with the same
// PublicKey, and input over MaxConfigSize. An all-zero PresharedKey means
// "none", as in wg(8).
//
// Errors are *ParseError values naming the line. They never repeat a key's
// value, nor anything else in the file that looks like a key.
func ParseConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, &ParseError{Msg: fmt.Sprintf("file is %d bytes; the limit is %d bytes (1 MiB)", len(b), MaxConfigSize)}
	}
	p := parser{}
	text := strings.TrimPrefix(string(b), "\ufeff")
	for i, raw := range strings.Split(text, "\n") {
		if err := p.line(i+1, raw); err != nil {
			return nil, err
		}
	}
	return p.finish()
}

type section int

const (
	noSection section = iota
	inInterface
	inPeer
)

type parser struct {
	cfg      *Config
	ifLine   int // line of the [Interface] header; 0 before it
	sec      section
	secLine  int            // line of the current section header
	seen     map[string]int // single-valued key -> line, in the current section
	peer     *PeerConfig
	peerKeys map[Key]int // public key -> line of its [Peer] header
	v4, v6   []netip.Prefix
}

func (p *parser) errf(line int, format string, args ...any) error {
	return &ParseError{Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) line(n int, raw string) error {
	line := raw
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSpace(line)
	if line == "" || line[0] == ';' {
		return nil
	}
	if line[0] == '[' {
		return p.header(n, line)
	}
	key, value, ok := strings.Cut(line, "=")
	if !ok {
		return p.errf(n, "expected a [Section] header or a Key = Value line")
	}
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	lk := strings.ToLower(key)
	switch p.sec {
	case noSection:
		name, known := knownKey(lk)
		if !known {
			name = keyForError(key)
		}
		return p.errf(n, "%s comes before any section; start with [Interface]", name)
	case inInterface:
		if name, ok := interfaceKeys[lk]; ok {
			return p.interfaceKey(n, name, value)
		}
		if _, ok := ignoredInterfaceKeys[lk]; ok {
			return nil
		}
		if name, ok := peerKeys[lk]; ok {
			return p.errf(n, "%s belongs in a [Peer] section, not in [Interface]", name)
		}
		return p.errf(n, "unknown %s in [Interface]", keyForError(key))
	default:
		if name, ok := peerKeys[lk]; ok {
			return p.peerKey(n, name, value)
		}
		if name, ok := interfaceKeys[lk]; ok {
			return p.errf(n, "%s belongs in the [Interface] section, not in [Peer]", name)
		}
		if name, ok := ignoredInterfaceKeys[lk]; ok {
			return p.errf(n, "%s belongs in the [Interface] section, not in [Peer]", name)
		}
		return p.errf(n, "unknown %s in [Peer]", keyForError(key))
	}
}

func knownKey(lk string) (string, bool) {
	if name, ok := interfaceKeys[lk]; ok {
		return name, true
	}
	if name, ok := ignoredInterfaceKeys[lk]; ok {
		return name, true
	}
	name, ok := peerKeys[lk]
	return name, ok
}

// keyForError names an unknown key in an error message. It repeats the key
// only if it looks like a key name (a short identifier); anything else may be
// a pasted secret.
func keyForError(key string) string {
	if key == "" {
		return "line with an empty key"
	}
	if len(key) > 32 || !isIdent(key) {
		return "line (not a known Key = Value)"
	}
	return fmt.Sprintf("key %q", key)
}

func isIdent(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

func (p *parser) header(n int, line string) error {
	if !strings.HasSuffix(line, "]") {
		return p.errf(n, "malformed section header: want [Interface] or [Peer]")
	}
	name := strings.TrimSpace(line[1 : len(line)-1])
	if err := p.endSection(); err != nil {
		return err
	}
	switch {
	case strings.EqualFold(name, "Interface"):
		if p.ifLine != 0 {
			return p.errf(n, "second [Interface] section (the first is on line %d)", p.ifLine)
		}
		p.ifLine = n
		p.sec = inInterface
	case strings.EqualFold(name, "Peer"):
		p.peer = &PeerConfig{}
		p.sec = inPeer
	default:
		if len(name) <= 32 && isIdent(name) {
			return p.errf(n, "unknown section [%s]: want [Interface] or [Peer]", name)
		}
		return p.errf(n, "unknown section: want [Interface] or [Peer]")
	}
	if p.cfg == nil {
		p.cfg = &Config{}
	}
	p.secLine = n
	p.seen = map[string]int{}
	return nil
}

// endSection checks the section that is ending and files a finished peer.
func (p *parser) endSection() error {
	switch p.sec {
	case inInterface:
		if p.cfg.PrivateKey.IsZero() {
			return p.errf(p.secLine, "[Interface] has no PrivateKey")
		}
	case inPeer:
		if p.peer.PublicKey.IsZero() {
			return p.errf(p.secLine, "[Peer] has no PublicKey")
		}
		if p.peerKeys == nil {
			p.peerKeys = map[Key]int{}
		}
		if first, dup := p.peerKeys[p.peer.PublicKey]; dup {
			return p.errf(p.secLine, "[Peer] has the same PublicKey as the [Peer] on line %d", first)
		}
		p.peerKeys[p.peer.PublicKey] = p.secLine
		p.cfg.Peers = append(p.cfg.Peers, *p.peer)
		p.peer = nil
	}
	p.sec = noSection
	return nil
}

func (p *parser) finish() (*Config, error) {
	if err := p.endSection(); err != nil {
		return nil, err
	}
	if p.ifLine == 0 {
		return nil, &ParseError{Msg: "no [Interface] section"}
	}
	if len(p.v4)+len(p.v6) > 0 {
		p.cfg.Addresses = append(p.v4, p.v6...)
	}
	return p.cfg, nil
}

// once records a single-valued key and rejects a repeat.
func (p *parser) once(n int, name string) error {
	if multiKeys[name] {
		return nil
	}
	if first, ok := p.seen[name]; ok {
		return p.errf(n, "%s is set twice in this section (first on line %d)", name, first)
	}
	p.seen[name] = n
	return nil
}

func (p *parser) interfaceKey(n int, name, value string) error {
	if err := p.once(n, name); err != nil {
		return err
	}
	c := p.cfg
	var err error
	switch name {
	case "PrivateKey":
		c.PrivateKey, err = parseKeyValue(value, false)
	case "Address":
		var ps []netip.Prefix
		ps, err = parsePrefixList(value)
		for _, pfx := range ps {
			if pfx.Addr().Is4() {
				p.v4 = append(p.v4, pfx)
			} else {
				p.v6 = append(p.v6, pfx)
			}
		}
	case "DNS":
		err = forEachListItem(value, func(item string) error {
			a, search, err := parseDNSItem(item)
			if err != nil {
				return err
			}
			if search != "" {
				c.DNSSearch = append(c.DNSSearch, search)
			} else {
				c.DNS = append(c.DNS, a)
			}
			return nil
		})
	case "MTU":
		c.MTU, err = parseIntRange(value, MinMTU, MaxMTU)
	case "ListenPort":
		c.ListenPort, err = parseIntRange(value, 0, 65535)
	}
	if err != nil {
		return p.errf(n, "%s: %v", name, err)
	}
	return nil
}

func (p *parser) peerKey(n int, name, value string) error {
	if err := p.once(n, name); err != nil {
		return err
	}
	pc := p.peer
	var err error
	switch name {
	case "PublicKey":
		pc.PublicKey, err = parseKeyValue(value, false)
	case "PresharedKey":
		pc.PresharedKey, err = parseKeyValue(value, true)
	case "Endpoint":
		err = checkEndpoint(value)
		pc.Endpoint = value
	case "AllowedIPs":
		var ps []netip.Prefix
		ps, err = parsePrefixList(value)
		pc.AllowedIPs = append(pc.AllowedIPs, ps...)
	case "PersistentKeepalive":
		if strings.EqualFold(value, "off") {
			pc.PersistentKeepalive = 0
		} else {
			pc.PersistentKeepalive, err = parseIntRange(value, 0, 65535)
		}
	}
	if err != nil {
		return p.errf(n, "%s: %v", name, err)
	}
	return nil
}

// MinMTU and MaxMTU bound the MTU ParseConfig and Validate accept: the
// smallest the Linux kernel allows on a WireGuard interface, and the largest
// IP packet.
const (
	MinMTU = 68
	MaxMTU = 65535
)

// parseKeyValue parses a base64 key. Its errors never contain the value.
func parseKeyValue(value string, zeroOK bool) (Key, error) {
	if value == "" {
		return Key{}, fmt.Errorf("no value")
	}
	b, err := base64.StdEncoding.DecodeString(value)
	if err != nil || len(b) != 32 {
		return Key{}, fmt.Errorf("not a valid WireGuard key (want 44 characters of base64 encoding 32 bytes)")
	}
	var k Key
	copy(k[:], b)
	if k.IsZero() && !zeroOK {
		return Key{}, errKeyZero
	}
	return k, nil
}

// forEachListItem calls f for each item of a list value. Items are
// separated by commas and/or blanks (wg-quick splits Address and DNS on
// both); empty items, as from a trailing comma, are skipped.
func forEachListItem(value string, f func(string) error) error {
	items := strings.FieldsFunc(value, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\v' || r == '\f' || r == '\r'
	})
	for _, item := range items {
		if err := f(item); err != nil {
			return err
		}
	}
	return nil
}

func parsePrefixList(value string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := forEachListItem(value, func(item string) error {
		pfx, err := parsePrefix(item)
		if err != nil {
			return err
		}
		out = append(out, pfx)
		return nil
	})
	return out, err
}

// parsePrefix parses an IP prefix, or an address that it makes a /32 or /128.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s is not an IP prefix", show(s))
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s is not an IP address", show(s))
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s: an address with a zone is not allowed here", show(s))
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseDNSItem classifies one DNS entry as wg-quick does: all digits and
// dots, or anything with a colon, is meant as an address; anything else is a
// search domain.
func parseDNSItem(s string) (netip.Addr, string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, "", fmt.Errorf("%s: an address with a zone is not allowed here", show(s))
		}
		return a, "", nil
	}
	if looksNumeric(s) || strings.Contains(s, ":") {
		return netip.Addr{}, "", fmt.Errorf("%s is not an IP address", show(s))
	}
	if !isDomainName(s) {
		return netip.Addr{}, "", fmt.Errorf("%s is neither an IP address nor a search domain", show(s))
	}
	return netip.Addr{}, s, nil
}

// looksNumeric reports whether s is made only of digits and dots, the form
// wg-quick and resolvers take for an IPv4 address.
func looksNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}

// isDomainName reports whether s is a plausible DNS name: dot-separated
// labels of letters, digits, '-' and '_', at most 63 bytes each and 253 in
// all, with an optional final dot.
func isDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		if !isIdent(label) {
			return false
		}
	}
	return true
}

// checkEndpoint checks a host:port endpoint. The host is an IP address
// (IPv6 in brackets, a zone allowed) or a DNS name; the port is 1-65535.
func checkEndpoint(s string) error {
	if s == "" {
		return fmt.Errorf("no value")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%s is not host:port (an IPv6 address goes in brackets: [2001:db8::1]:51820)", show(s))
	}
	if _, err := parseIntRange(port, 1, 65535); err != nil {
		return fmt.Errorf("%s: port %v", show(s), err)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if z := a.Zone(); z != "" && !isIdent(strings.ReplaceAll(z, ".", "")) {
			return fmt.Errorf("%s: bad zone in the address", show(s))
		}
		if a.Is4() && strings.HasPrefix(s, "[") {
			return fmt.Errorf("%s: only IPv6 addresses go in brackets", show(s))
		}
		return nil
	}
	if looksNumeric(host) || strings.Contains(host, ":") {
		return fmt.Errorf("%s: %s is not an IP address", show(s), show(host))
	}
	if strings.HasPrefix(s, "[") {
		return fmt.Errorf("%s: only IPv6 addresses go in brackets", show(s))
	}
	if !isDomainName(host) {
		return fmt.Errorf("%s: %s is neither an IP address nor a host name", show(s), show(host))
	}
	return nil
}

// parseIntRange parses a decimal integer in [lo, hi], digits only.
func parseIntRange(s string, lo, hi int) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("no value")
	}
	ok := len(s) <= 10
	for i := 0; ok && i < len(s); i++ {
		ok = '0' <= s[i] && s[i] <= '9'
	}
	var v int
	if ok {
		var err error
		v, err = strconv.Atoi(s)
		ok = err == nil && lo <= v && v <= hi
	}
	if !ok {
		return 0, fmt.Errorf("%s is not a whole number from %d to %d", show(s), lo, hi)
	}
	return v, nil
}

// show quotes a value from the file for an error message. It hides values
// that contain something shaped like a base64 key (a run of 43 or more
// base64 characters), so that a secret pasted into the wrong place is not
// repeated, and shortens long values.
func show(s string) string {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
			run++
			if run >= 43 {
				return "(value not shown: it looks like a key)"
			}
		} else {
			run = 0
		}
	}
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
