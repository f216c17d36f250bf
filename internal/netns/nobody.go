package netns

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
)

// asNobodyEnv marks the child process RunAsNobody starts, naming its test.
const asNobodyEnv = "MERIDIAN_TEST_AS_NOBODY"

// RunAsNobody runs the calling top-level test again in a child process of
// the test binary as user nobody (uid 65534), which holds no capabilities
// (execve as a non-root user clears them), and fails t unless the test
// passes there. A test that checks what happens without privilege calls it
// when it has privilege, instead of skipping:
//
//	if hasNetAdmin() {
//		netns.RunAsNobody(t)
//		return
//	}
//	// here without privilege: directly, or in the child
//
// Called in the child it fails t: the child has kept its privilege.
func RunAsNobody(t *testing.T) {
	t.Helper()
	if os.Getenv(asNobodyEnv) == t.Name() {
		t.Fatalf("running as uid %d, the test still has the privilege it checks the lack of", os.Geteuid())
	}
	// The test binary lives in a directory only its owner can enter: run a
	// copy that nobody can read.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, filepath.Base(exe))
	if err := copyFile(bin, exe); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), asNobodyEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s as nobody: %v\n%s", t.Name(), err, out)
	}
	t.Logf("passed as nobody:\n%s", out)
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
