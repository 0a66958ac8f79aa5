package main

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// residentSections says how much of each part of a server's binary is
// resident: code, read-only data and the function tables, each as resident
// of its size, from /proc/<pid>/pagemap (needs root). It is the evidence for
// what the RSS comparison is about: a Go binary's mapped pages follow its
// size, because every package's init touches its own part of the code at
// start and the kernel maps the pages around each fault (fault-around).
func residentSections(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err.Error()
	}
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	present, err := presentPages(pid, exe)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, s := range []struct{ section, name string }{{".text", "code"}, {".rodata", "read-only data"}, {".gopclntab", "function tables"}} {
		sec := f.Section(s.section)
		if sec == nil {
			continue
		}
		var n uint64
		for p := sec.Addr &^ 4095; p < sec.Addr+sec.Size; p += 4096 {
			if present[p] {
				n++
			}
		}
		resident := min(n*4096, sec.Size)
		parts = append(parts, fmt.Sprintf("%s %.1f of %.1f MB (%.0f%%)", s.name, float64(resident)/1e6, float64(sec.Size)/1e6, 100*float64(resident)/float64(sec.Size)))
	}
	return strings.Join(parts, ", ")
}

// presentPages is the set of page addresses of the process's mappings of
// file exe that are in memory.
func presentPages(pid int, exe string) (map[uint64]bool, error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	present := map[uint64]bool{}
	for _, l := range strings.Split(string(maps), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || f[5] != exe {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		buf := make([]byte, (end-start)/4096*8)
		if _, err := pm.ReadAt(buf, int64(start/4096*8)); err != nil {
			return nil, fmt.Errorf("read pagemap: %w", err)
		}
		for i := range len(buf) / 8 {
			// Bit 63: the page is present in memory.
			if binary.LittleEndian.Uint64(buf[i*8:])&(1<<63) != 0 {
				present[start+uint64(i)*4096] = true
			}
		}
	}
	return present, nil
}
