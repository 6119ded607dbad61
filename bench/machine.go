package main

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/bench/internal/report"
)

// machine describes the host; ratios are only comparable between runs on
// similar machines, and absolute figures hardly at all.
func machine() report.Machine {
	m := report.Machine{Cores: runtime.NumCPU(), CPU: "unknown CPU", Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if v := firstField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if v := firstField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64); err == nil {
			m.MemMiB = kb / 1024
		}
	}
	return m
}

// firstField returns the value of the first "key: value" line for key.
func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
