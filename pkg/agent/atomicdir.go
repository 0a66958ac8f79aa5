package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The layout of a set of files that changes as one (the fetch's and the
// sidecar's refreshed secrets), the one the kubelet gives a Secret volume:
//
//	dir/..2026_12_07_10_00_00.123456789/<group>/<version>/<key>   the files
//	dir/..data -> ..2026_12_07_10_00_00.123456789                 the current set
//	dir/<group> -> ..data/<group>                                  each top-level name
//
// A new set is written to a new timestamped directory, then ..data is
// replaced by a rename, which is atomic: a reader that opens dir/<group>/...
// gets a whole file of the old set or of the new one, and a reader that
// resolves ..data once and reads below it sees one whole set. The old
// directory is removed last. Names that start with .. are the layout's.
const (
	dataLink = "..data"
	// StatusName is the sidecar's status file when it has no token
	// directory: beside ..data, a name no secret can have.
	StatusName = "..status"
)

// writeSet writes files (a path relative to dir, clean and not starting
// with .., and its value) into dir as one set, replacing the set there,
// with mode; directories get dirMode(mode). It refuses a top-level name
// that is a directory of its own in dir (a Kubernetes Secret's mount
// point) rather than replacing it.
func writeSet(dir string, files map[string][]byte, mode os.FileMode) error {
	top := map[string]bool{}
	for rel := range files {
		if !filepath.IsLocal(rel) || filepath.Clean(rel) != rel || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("file %q: not a clean relative path in %s", rel, dir)
		}
		top[strings.SplitN(rel, string(filepath.Separator), 2)[0]] = true
	}
	if err := os.MkdirAll(dir, dirMode(mode)); err != nil {
		return err
	}
	for name := range top {
		// A top-level name must be the layout's symlink, or not exist yet.
		fi, err := os.Lstat(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink == 0:
			return fmt.Errorf("%s: a %s where the set's link belongs", filepath.Join(dir, name), fi.Mode().Type())
		}
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	// The kubelet gives an fsGroup's emptyDir the setgid bit, so that what
	// is made in it belongs to that group (the files' 0440 are for it): a
	// chmod must keep the bit, which new directories below inherit.
	dm := dirMode(mode)
	if fi, err := os.Stat(dir); err == nil && fi.Mode()&fs.ModeSetgid != 0 {
		dm |= fs.ModeSetgid
	}
	if err := os.Chmod(ts, dm); err != nil {
		os.RemoveAll(ts)
		return err
	}
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(ts, rel)
		if err := os.MkdirAll(filepath.Dir(p), dirMode(mode)); err != nil {
			os.RemoveAll(ts)
			return err
		}
		if err := os.WriteFile(p, files[rel], mode); err != nil {
			os.RemoveAll(ts)
			return err
		}
		// WriteFile's mode is cut by the umask.
		if err := os.Chmod(p, mode); err != nil {
			os.RemoveAll(ts)
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	if err := replaceLink(dir, dataLink, filepath.Base(ts)); err != nil {
		os.RemoveAll(ts)
		return fmt.Errorf("switch %s: %w", dataLink, err)
	}
	for name := range top {
		if target, err := os.Readlink(filepath.Join(dir, name)); err == nil && target == filepath.Join(dataLink, name) {
			continue
		}
		if err := replaceLink(dir, name, filepath.Join(dataLink, name)); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	if old != "" && old != filepath.Base(ts) && strings.HasPrefix(old, "..") && !strings.ContainsRune(old, filepath.Separator) {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return fmt.Errorf("remove the previous set %s: %w", old, err)
		}
	}
	return nil
}

// replaceLink makes dir/name a symlink to target, replacing what is there
// with a rename so that the name is never missing.
func replaceLink(dir, name, target string) error {
	tmp := filepath.Join(dir, "..tmp-"+name)
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// readSet reads the current set of dir: the files below ..data, by their
// path relative to it; an empty map when there is no set yet.
func readSet(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	} else if err != nil {
		return nil, err
	}
	// Resolved once: the set read is the one ..data named then.
	root := filepath.Join(dir, target)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = b
		return nil
	})
	return out, err
}
