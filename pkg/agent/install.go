package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// BinaryName is the agent's file name in the install directory.
const BinaryName = "secctx-agent"

// Install copies the running binary into dir as secctx-agent, executable by
// every user: the wrapped containers run as their own users. It writes a
// temporary file and renames it, so a container never sees half a binary.
func Install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	return installFrom(self, dir)
}

// InstallWrapper copies the exec wrapper, secctx-agent, into dir: the
// running binary when it is secctx-agent, else the secctx-agent beside it
// in the image (the fetch runs secctx-fetch, which is twice the size). The
// fetch and the sidecar install it as they start, so that a pod needs no
// init container of its own for it: each one costs the pod about a second
// of the kubelet's (docs/performance.md).
func InstallWrapper(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	src := self
	if filepath.Base(self) != BinaryName {
		src = filepath.Join(filepath.Dir(self), BinaryName)
	}
	return installFrom(src, dir)
}

func installFrom(from, dir string) error {
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("open %s: %w", from, err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, ".install-*")
	if err != nil {
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("copy to %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	dst := filepath.Join(dir, BinaryName)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}
