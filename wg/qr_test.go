package wg

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"unicode/utf8"

	qrcode "github.com/skip2/go-qrcode"
)

// moduleCount is the side of the code for text at medium error correction,
// quiet zone included, as computed by the library itself.
func moduleCount(t *testing.T, text string) int {
	t.Helper()
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		t.Fatal(err)
	}
	q.DisableBorder = true
	return len(q.Bitmap()) + 2*QRQuietZone
}

func TestQRCodePNG(t *testing.T) {
	text := string(sampleConfig(t).Render())
	n := moduleCount(t, text)
	for _, size := range []int{n, 256, 512, 513} {
		b, err := QRCodePNG(text, size)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("size %d: png.Decode: %v", size, err)
		}
		if r := img.Bounds(); r.Dx() != size || r.Dy() != size {
			t.Errorf("size %d: image is %v", size, r)
		}
		scale := size / n
		off := (size - n*scale) / 2
		dark := func(x, y int) bool {
			r, _, _, _ := img.At(x, y).RGBA()
			return r < 0x8000
		}
		// Corners are quiet zone (light); the first module of the code
		// proper is the top-left corner of a finder pattern (dark).
		if dark(0, 0) || dark(size-1, size-1) {
			t.Errorf("size %d: corner is dark", size)
		}
		q := off + QRQuietZone*scale
		if !dark(q, q) || !dark(q+scale-1, q+scale-1) {
			t.Errorf("size %d: finder pattern corner at %d is not dark", size, q)
		}
		if dark(q-1, q-1) {
			t.Errorf("size %d: pixel before the code is dark", size)
		}
	}

	for _, size := range []int{0, -5, n - 1, MaxQRPNGSize + 1} {
		if _, err := QRCodePNG(text, size); err == nil {
			t.Errorf("size %d: no error", size)
		}
	}
	if _, err := QRCodePNG(strings.Repeat("x", 5000), 512); err == nil {
		t.Error("text too long for a QR code: no error")
	}
}

func TestQRCodeTerminal(t *testing.T) {
	text := string(sampleConfig(t).Render())
	out := QRCodeTerminal(text)
	n := moduleCount(t, text)
	if !strings.HasSuffix(out, "\n") {
		t.Fatal("output does not end in a newline")
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if want := (n + 1) / 2; len(lines) != want {
		t.Errorf("%d lines, want %d for %d modules", len(lines), want, n)
	}
	full := strings.Repeat("█", n)
	for i, l := range lines {
		if !strings.HasPrefix(l, ansiWhiteOnBlack) || !strings.HasSuffix(l, ansiReset) {
			t.Fatalf("line %d does not set and reset its colours: %q", i, l)
		}
		body := strings.TrimSuffix(strings.TrimPrefix(l, ansiWhiteOnBlack), ansiReset)
		if c := utf8.RuneCountInString(body); c != n {
			t.Errorf("line %d is %d characters wide, want %d", i, c, n)
		}
		// The quiet zone is light: the first two lines (4 module rows) are
		// all full blocks, and every line starts and ends with 4 light
		// module columns.
		if i < QRQuietZone/2 && body != full {
			t.Errorf("line %d is not all quiet zone: %q", i, body)
		}
		if !strings.HasPrefix(body, "████") || !strings.HasSuffix(body, "████") {
			t.Errorf("line %d has no quiet zone at the sides: %q", i, body)
		}
	}
	// With an odd module count the last line holds the last quiet-zone row
	// over an imaginary light row: all full blocks.
	if n%2 == 1 && lines[len(lines)-1] != ansiWhiteOnBlack+full+ansiReset {
		t.Errorf("last line is not quiet zone: %q", lines[len(lines)-1])
	}

	if other := QRCodeTerminal(text + " "); other == out {
		t.Error("a different text gives the same code")
	}
	if QRCodeTerminal(strings.Repeat("x", 5000)) != "" {
		t.Error("text too long for a QR code: output not empty")
	}
}
