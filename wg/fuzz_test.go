package wg

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fuzzSeeds are valid and invalid configurations to start the fuzzer from;
// crashers it finds go to testdata/fuzz/FuzzParseConfig, which go test
// replays as regression cases.
var fuzzSeeds = []string{
	goodIface,
	goodIface + "Address = 10.8.0.2/32, fd00::2\nDNS = 10.8.0.1, corp.example\nMTU = 1420\nListenPort = 51820\n\n" +
		"[Peer]\nPublicKey = " + testPub1 + "\nPresharedKey = " + testPSK + "\nEndpoint = vpn.example.com:51820\n" +
		"AllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n",
	"\ufeff[interface]\r\nprivatekey=" + testPriv + " # c\r\n; x\r\n[PEER]\r\npublickey=" + testPub2 + "\r\nendpoint=[fe80::1%eth0]:1\r\n",
	goodIface + "PostUp = a; b # c\nTable = off\nFwMark = 0x1\n[Peer]\nPublicKey = " + testPub1 + "\nAllowedIPs=\nPersistentKeepalive=off\n",
	goodIface + "[Peer]\nPublicKey = " + testPub1 + "\nAllowedIPs = 10.0.0.300/32\n",
	goodIface + "Address = " + otherPriv + "\n",
	goodIface + "[Peer]\nPublicKey = " + testPub1 + "\n[Peer]\nPublicKey = " + testPub1 + "\n",
	"[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	"[Peer]\n",
	"PrivateKey = x\n",
	"[Interface\n",
	"",
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	if golden, err := os.ReadFile(filepath.Join("testdata", "render.golden")); err == nil {
		f.Add(golden)
	}
	f.Fuzz(checkParse)
}

// FuzzParseConfigValues fuzzes the values of a config whose structure is
// right, so that far more inputs get past the parser than with
// FuzzParseConfig and the round trip property is exercised hard.
func FuzzParseConfigValues(f *testing.F) {
	f.Add("10.8.0.2/32, fd00::2", "10.8.0.1, corp.example", "1420", "51820", testPSK, "vpn.example.com:51820", "0.0.0.0/0, ::/0", "25")
	f.Add("10.8.0.2", "fd00::1 home.arpa.", "", "0", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "[fe80::1%eth0]:1", "", "off")
	f.Add("10.0.0.300/32", "1.2.3", "67", "65536", "abc", "2001:db8::1:51820", "10.0.0.1/33", "-1")
	f.Add("::ffff:1.2.3.4/104,", ",,", "0068", "00", testPub2, "[::1]:65535", "::/0 10.0.0.0/8", "65535")
	f.Fuzz(func(t *testing.T, address, dns, mtu, port, psk, endpoint, allowed, keepalive string) {
		in := "[Interface]\nPrivateKey = " + testPriv +
			"\nAddress = " + address +
			"\nDNS = " + dns +
			"\nMTU = " + mtu +
			"\nListenPort = " + port +
			"\n\n[Peer]\nPublicKey = " + testPub1 +
			"\nPresharedKey = " + psk +
			"\nEndpoint = " + endpoint +
			"\nAllowedIPs = " + allowed +
			"\nPersistentKeepalive = " + keepalive + "\n"
		checkParse(t, []byte(in))
	})
}

// checkParse is the fuzz property: ParseConfig never panics; its errors never
// repeat a private key from the input; what it accepts passes Validate, and
// Render then ParseConfig gives the same Config back, and the same text.
func checkParse(t *testing.T, in []byte) {
	c, err := ParseConfig(in)
	if err != nil {
		for _, line := range strings.Split(string(in), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(k), "PrivateKey") {
				continue
			}
			v = strings.TrimSpace(strings.SplitN(v, "#", 2)[0])
			if len(v) >= 43 && isBase64Run(v[:43]) && strings.Contains(err.Error(), v[:43]) {
				t.Fatalf("error %q repeats the private key", err)
			}
		}
		return
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("ParseConfig accepted a config that Validate rejects: %v\ninput: %q", err, in)
	}
	text := c.Render()
	c2, err := ParseConfig(text)
	if err != nil {
		t.Fatalf("ParseConfig(Render()) failed: %v\ninput: %q\nrendered:\n%s", err, in, text)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("Render/Parse round trip changed the config\ninput: %q\nfirst:  %+v\nsecond: %+v", in, c, c2)
	}
	if text2 := c2.Render(); !bytes.Equal(text, text2) {
		t.Fatalf("Render is not stable:\n%s\n---\n%s", text, text2)
	}
}

func isBase64Run(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}
