package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
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

// setDirRE is the name of a set's directory as writeSet makes it
// (os.MkdirTemp's random suffix after the time).
var setDirRE = regexp.MustCompile(`^\.\.[0-9]{4}(_[0-9]{2}){5}\.[0-9]+$`)

// currentSet is the directory ..data names in dir, when it is one of
// writeSet's (a name of setDirRE, a real directory): else "". Nothing else
// that ..data may name is trusted, since the sidecar removes it later.
func currentSet(dir string) string {
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil || !setDirRE.MatchString(target) {
		return ""
	}
	if fi, err := os.Lstat(filepath.Join(dir, target)); err != nil || !fi.IsDir() {
		return ""
	}
	return target
}

// writeSet writes files (a path relative to dir, clean and not starting
// with .., and its value) into dir as one set, replacing the set there,
// with mode; directories get dirMode(mode). It refuses a top-level name
// that is a directory of its own in dir (a Kubernetes Secret's mount
// point) rather than replacing it. switched says that the new set is the
// current one: an error after it is the clean-up's (a previous set left).
func writeSet(dir string, files map[string][]byte, mode os.FileMode) (switched bool, err error) {
	top := map[string]bool{}
	for rel := range files {
		if !filepath.IsLocal(rel) || filepath.Clean(rel) != rel || strings.HasPrefix(rel, "..") {
			return false, fmt.Errorf("file %q: not a clean relative path in %s", rel, dir)
		}
		top[strings.SplitN(rel, string(filepath.Separator), 2)[0]] = true
	}
	if err := os.MkdirAll(dir, dirMode(mode)); err != nil {
		return false, err
	}
	for name := range top {
		// A top-level name must be the layout's symlink, or not exist yet.
		fi, err := os.Lstat(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return false, err
		case fi.Mode()&fs.ModeSymlink == 0:
			return false, fmt.Errorf("%s: a %s where the set's link belongs", filepath.Join(dir, name), fi.Mode().Type())
		}
	}
	old := currentSet(dir)
	// Sets an interrupted write left behind (a sidecar killed in the
	// middle) would fill the volume over time.
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if n := e.Name(); n != old && setDirRE.MatchString(n) && e.IsDir() {
				_ = os.RemoveAll(filepath.Join(dir, n))
			}
		}
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	// The kubelet gives an fsGroup's emptyDir the setgid bit, so that what
	// is made in it belongs to that group (the files' 0440 are for it): a
	// chmod must keep the bit, which new directories below inherit.
	dm := dirMode(mode)
	if fi, err := os.Stat(dir); err == nil && fi.Mode()&fs.ModeSetgid != 0 {
		dm |= fs.ModeSetgid
	}
	if err := fill(ts, files, mode, dm); err != nil {
		os.RemoveAll(ts)
		return false, err
	}
	if err := replaceLink(dir, dataLink, filepath.Base(ts)); err != nil {
		os.RemoveAll(ts)
		return false, fmt.Errorf("switch %s: %w", dataLink, err)
	}
	for name := range top {
		if target, err := os.Readlink(filepath.Join(dir, name)); err == nil && target == filepath.Join(dataLink, name) {
			continue
		}
		if err := replaceLink(dir, name, filepath.Join(dataLink, name)); err != nil {
			return true, fmt.Errorf("link %s: %w", name, err)
		}
	}
	if old != "" && old != filepath.Base(ts) {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return true, fmt.Errorf("remove the previous set %s: %w", old, err)
		}
	}
	return true, nil
}

// fill writes files into the new set's directory ts, which is the
// writer's own (os.MkdirTemp, 0700) until its mode is set last.
func fill(ts string, files map[string][]byte, mode, dm os.FileMode) error {
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(ts, rel)
		if err := os.MkdirAll(filepath.Dir(p), dm); err != nil {
			return err
		}
		// O_EXCL: a name that is there already (a link someone put) is
		// not followed.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return err
		}
		if _, err := f.Write(files[rel]); err != nil {
			f.Close()
			return err
		}
		// The mode asked for is cut by the umask.
		if err := f.Chmod(mode); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return os.Chmod(ts, dm)
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

// readSet reads the current set of dir: the files below the directory
// ..data names, by their path relative to it; an empty map when there is
// no set, or ..data names anything but one of writeSet's directories.
func readSet(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	target := currentSet(dir)
	if target == "" {
		return out, nil
	}
	// Resolved once: the set read is the one ..data named then.
	root, err := os.OpenRoot(filepath.Join(dir, target))
	if err != nil {
		return map[string][]byte{}, err
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil // directories are walked, links are not followed
		}
		b, err := root.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = b
		return nil
	})
	if err != nil {
		return map[string][]byte{}, err
	}
	return out, nil
}
