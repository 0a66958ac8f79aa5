package cluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The kernel settings kubelet, kube-proxy and the bridge plugin change.
var sysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
}

// Paths outside the cluster directory that components create no matter how
// they are configured; removed at teardown unless they were there before.
var hostPaths = []string{
	"/var/lib/kubelet",
	"/var/lib/cni",
	"/var/log/containers",
	"/var/log/pods",
	"/run/containerd",
	"/run/netns",
	"/etc/cni",
	"/opt/cni",
}

var cgroupRoots = []string{"kubepods", "k8s.io"}

var iptablesTables = []string{"filter", "nat", "mangle"}

// HostState is what the machine looks like in the ways a cluster changes it.
// Start saves one in the cluster directory so that a run that crashed is
// cleaned up by the next one; tests compare one taken before Start with one
// taken after Stop.
type HostState struct {
	Sysctls map[string]string   `json:"sysctls"`
	Existed map[string]bool     `json:"existed"`
	Netns   []string            `json:"netns"`
	Chains  map[string][]string `json:"chains"` // "iptables/nat" -> chains
	Cgroups map[string]bool     `json:"cgroups"`
	Bridge  bool                `json:"bridge"`
	Mounts  []string            `json:"mounts"`
}

// SnapshotHost reads the host's state.
func SnapshotHost() *HostState {
	s := &HostState{Sysctls: map[string]string{}, Existed: map[string]bool{}, Chains: map[string][]string{}, Cgroups: map[string]bool{}}
	for _, k := range sysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		s.Existed[p] = err == nil
	}
	s.Netns, _ = filepath.Glob("/run/netns/*")
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, t := range iptablesTables {
			s.Chains[ipt+"/"+t] = chains(ipt, t)
		}
	}
	for _, h := range cgroupHierarchies() {
		for _, r := range cgroupRoots {
			_, err := os.Stat(filepath.Join(h, r))
			s.Cgroups[filepath.Join(h, r)] = err == nil
		}
	}
	s.Bridge = linkExists(Bridge)
	s.Mounts = mountPoints()
	return s
}

// Diff lists what differs between s (before) and after, one line each;
// empty when the machine is as it was.
func (s *HostState) Diff(after *HostState) []string {
	var d []string
	for k, v := range s.Sysctls {
		if after.Sysctls[k] != v {
			d = append(d, fmt.Sprintf("sysctl %s: %s, was %s", k, after.Sysctls[k], v))
		}
	}
	for k, v := range s.Existed {
		if after.Existed[k] != v {
			d = append(d, fmt.Sprintf("path %s exists: %v, was %v", k, after.Existed[k], v))
		}
	}
	for k, v := range s.Cgroups {
		if after.Cgroups[k] != v {
			d = append(d, fmt.Sprintf("cgroup %s exists: %v, was %v", k, after.Cgroups[k], v))
		}
	}
	if s.Bridge != after.Bridge {
		d = append(d, fmt.Sprintf("bridge %s exists: %v, was %v", Bridge, after.Bridge, s.Bridge))
	}
	d = append(d, setDiff("network namespace", s.Netns, after.Netns)...)
	d = append(d, setDiff("mount", s.Mounts, after.Mounts)...)
	for k, v := range s.Chains {
		d = append(d, setDiff(k+" chain", v, after.Chains[k])...)
	}
	sort.Strings(d)
	return d
}

func setDiff(what string, before, after []string) []string {
	b := map[string]bool{}
	for _, x := range before {
		b[x] = true
	}
	a := map[string]bool{}
	var d []string
	for _, x := range after {
		a[x] = true
		if !b[x] {
			d = append(d, fmt.Sprintf("%s %s added", what, x))
		}
	}
	for _, x := range before {
		if !a[x] {
			d = append(d, fmt.Sprintf("%s %s removed", what, x))
		}
	}
	return d
}

func mountPoints() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 {
			mps = append(mps, unescapeMount(f[4]))
		}
	}
	sort.Strings(mps)
	return mps
}

func (s *HostState) save(path string) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func loadHostState(path string) (*HostState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s HostState
	return &s, json.Unmarshal(b, &s)
}

// restore puts back what the cluster changed outside its directory. Every
// step runs even if one fails; the errors are joined.
func (s *HostState) restore(bridge string) error {
	var errs []error
	// Processes left in the pod cgroups (containers whose shim is gone).
	for _, h := range cgroupHierarchies() {
		for _, r := range cgroupRoots {
			root := filepath.Join(h, r)
			if s.Cgroups[root] {
				continue
			}
			killCgroup(root)
		}
	}
	for _, h := range cgroupHierarchies() {
		for _, r := range cgroupRoots {
			root := filepath.Join(h, r)
			if s.Cgroups[root] {
				continue
			}
			if err := removeCgroup(root); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Network namespaces CNI made, then the bridge (which takes the host
	// ends of the veth pairs with it).
	before := map[string]bool{}
	for _, n := range s.Netns {
		before[n] = true
	}
	nss, _ := filepath.Glob("/run/netns/*")
	for _, n := range nss {
		if before[n] {
			continue
		}
		_ = syscall.Unmount(n, syscall.MNT_DETACH)
		if err := os.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if linkExists(bridge) {
		if out, err := exec.Command("ip", "link", "del", bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %v: %s", bridge, err, out))
		}
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, t := range iptablesTables {
			if err := removeNewChains(ipt, t, s.Chains[ipt+"/"+t]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, p := range hostPaths {
		if s.Existed[p] {
			continue
		}
		unmountUnder(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	for k, v := range s.Sysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil || strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

func cgroupHierarchies() []string {
	// cgroup v2 has one hierarchy at the root; v1 one per controller.
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var hs []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			hs = append(hs, p)
		}
	}
	return hs
}

func killCgroup(root string) {
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
}

// removeCgroup removes a cgroup tree deepest first; a cgroup only goes once
// its processes are gone, so it retries briefly.
func removeCgroup(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	var last error
	for _, d := range dirs {
		for i := 0; i < 50; i++ {
			if last = syscall.Rmdir(d); last == nil || errors.Is(last, syscall.ENOENT) {
				last = nil
				break
			}
			killCgroup(d)
			time.Sleep(100 * time.Millisecond)
		}
		if last != nil {
			return fmt.Errorf("remove cgroup %s: %w", d, last)
		}
	}
	return nil
}

func chains(ipt, table string) []string {
	out, err := exec.Command(ipt, "-w", "-t", table, "-S").Output()
	if err != nil {
		return nil
	}
	var cs []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "-N" {
			cs = append(cs, f[1])
		}
	}
	return cs
}

// removeNewChains deletes the chains that were not there before (KUBE-*,
// made by kubelet and kube-proxy) and every rule that jumps to them.
func removeNewChains(ipt, table string, before []string) error {
	if _, err := exec.LookPath(ipt); err != nil {
		return nil
	}
	old := map[string]bool{}
	for _, c := range before {
		old[c] = true
	}
	var added []string
	for _, c := range chains(ipt, table) {
		if !old[c] {
			added = append(added, c)
		}
	}
	if len(added) == 0 {
		return nil
	}
	isNew := map[string]bool{}
	for _, c := range added {
		isNew[c] = true
	}
	out, _ := exec.Command(ipt, "-w", "-t", table, "-S").Output()
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "-A" || isNew[f[1]] {
			continue
		}
		for i := 2; i+1 < len(f); i++ {
			if (f[i] == "-j" || f[i] == "-g") && isNew[f[i+1]] {
				args := append([]string{"-w", "-t", table, "-D"}, unquote(f[1:])...)
				_ = exec.Command(ipt, args...).Run()
				break
			}
		}
	}
	var errs []error
	for _, c := range added {
		_ = exec.Command(ipt, "-w", "-t", table, "-F", c).Run()
	}
	for _, c := range added {
		if out, err := exec.Command(ipt, "-w", "-t", table, "-X", c).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s -t %s -X %s: %v: %s", ipt, table, c, err, out))
		}
	}
	return errors.Join(errs...)
}

// unquote undoes the quoting iptables -S puts around comments, which
// strings.Fields split; good enough for the rules kube components write.
func unquote(f []string) []string {
	var out []string
	for i := 0; i < len(f); i++ {
		if strings.HasPrefix(f[i], `"`) {
			s := f[i]
			for !strings.HasSuffix(s, `"`) || len(s) == 1 {
				if i+1 >= len(f) {
					break
				}
				i++
				s += " " + f[i]
			}
			out = append(out, strings.Trim(s, `"`))
			continue
		}
		out = append(out, f[i])
	}
	return out
}

// unmountUnder lazily unmounts every mount point at or under dir, deepest
// first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}
