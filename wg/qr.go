package wg

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// QRQuietZone is the light border, in modules, around every QR code made
// here: the 4 modules the QR standard asks for.
const QRQuietZone = 4

// MaxQRPNGSize is the largest image, in pixels a side, QRCodePNG makes.
const MaxQRPNGSize = 4096

// qrModules returns the QR code for text at medium error correction (15%), as
// rows of modules (true = dark) with the quiet zone included.
func qrModules(text string) ([][]bool, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("qr code: %w", err)
	}
	q.DisableBorder = true
	code := q.Bitmap()
	n := len(code) + 2*QRQuietZone
	out := make([][]bool, n)
	for y := range out {
		out[y] = make([]bool, n)
		if y >= QRQuietZone && y < n-QRQuietZone {
			copy(out[y][QRQuietZone:], code[y-QRQuietZone])
		}
	}
	return out, nil
}

// QRCodePNG returns a size×size pixel PNG of text as a QR code at medium
// error correction, black on white. Each module is a whole number of pixels;
// the rest of the image is extra white border, split evenly. It is an error
// if size is too small for the code (under one pixel a module, quiet zone
// included: 29 px for the smallest code, about 80 px for a typical client
// configuration), larger than MaxQRPNGSize, or if text is too long for a QR
// code.
func QRCodePNG(text string, size int) ([]byte, error) {
	if size <= 0 || size > MaxQRPNGSize {
		return nil, fmt.Errorf("qr code: size %d px is outside 1-%d", size, MaxQRPNGSize)
	}
	mods, err := qrModules(text)
	if err != nil {
		return nil, err
	}
	n := len(mods)
	scale := size / n
	if scale < 1 {
		return nil, fmt.Errorf("qr code: size %d px is too small for this code: it needs at least %d px", size, n)
	}
	off := (size - n*scale) / 2
	img := image.NewPaletted(image.Rect(0, 0, size, size), color.Palette{color.White, color.Black})
	for y, row := range mods {
		for x, dark := range row {
			if !dark {
				continue
			}
			for dy := range scale {
				i := img.PixOffset(off+x*scale, off+y*scale+dy)
				for dx := range scale {
					img.Pix[i+dx] = 1
				}
			}
		}
	}
	var b bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&b, img); err != nil {
		return nil, fmt.Errorf("qr code: %w", err)
	}
	return b.Bytes(), nil
}

// ANSI colours QRCodeTerminal sets: bright white on black, the way
// `qrencode -t ansiutf8` does it, so that the code reads the same on dark and
// light terminal themes.
const (
	ansiWhiteOnBlack = "\x1b[40;37;1m"
	ansiReset        = "\x1b[0m"
)

// QRCodeTerminal returns text as a QR code at medium error correction, to
// print on a terminal: each character is two modules, one above the other,
// drawn with the Unicode half blocks ▀ ▄ █ and the space, as `qrencode -t
// ansiutf8` does. Light modules are the (white) block glyphs and dark modules
// the (black) background; every line sets its colours and resets them at the
// end, so the code does not depend on the terminal's theme. The quiet zone is
// QRQuietZone modules. It has (modules+1)/2 lines, modules counting the quiet
// zone, each ending in "\n". A typical client configuration (one peer) makes
// a code 77 columns wide, 85 with a preshared key. It returns "" if text is
// too long for a QR code.
func QRCodeTerminal(text string) string {
	mods, err := qrModules(text)
	if err != nil {
		return ""
	}
	n := len(mods)
	var b strings.Builder
	b.Grow((n + 1) / 2 * (n*3 + len(ansiWhiteOnBlack) + len(ansiReset) + 1))
	for y := 0; y < n; y += 2 {
		b.WriteString(ansiWhiteOnBlack)
		for x := 0; x < n; x++ {
			top := !mods[y][x]
			bottom := y+1 >= n || !mods[y+1][x] // past the last row: light
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteString(ansiReset)
		b.WriteByte('\n')
	}
	return b.String()
}
