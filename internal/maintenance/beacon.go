package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"regexp"
	"sort"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// BeaconDir holds one object per running server, outside Distribution's
// /docker tree so the registry never sees it.
const BeaconDir = "/berth/replicas"

// DefaultBeaconEvery is how often a server refreshes its beacon; a beacon
// older than DefaultBeaconMaxAge belongs to a server that is gone.
const (
	DefaultBeaconEvery  = 10 * time.Second
	DefaultBeaconMaxAge = 3 * DefaultBeaconEvery
)

var beaconID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Beacon tells gc processes that a server uses this storage, so that a gc
// with no way to coordinate refuses to run instead of deleting under it.
type Beacon struct {
	d     storagedriver.StorageDriver
	id    string
	every time.Duration
	log   *slog.Logger
}

// NewBeacon returns a beacon written as BeaconDir/<id> every interval. id
// must be a valid storage path component (letters, digits, '.', '_', '-').
func NewBeacon(d storagedriver.StorageDriver, id string, every time.Duration) *Beacon {
	if every <= 0 {
		every = DefaultBeaconEvery
	}
	return &Beacon{d: d, id: id, every: every, log: slog.Default().With("component", "beacon", "id", id)}
}

type beaconContent struct {
	ID       string    `json:"id"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Written  time.Time `json:"written"`
	Interval string    `json:"interval"`
}

func (b *Beacon) path() string { return path.Join(BeaconDir, b.id) }

func (b *Beacon) write(ctx context.Context) error {
	host, _ := os.Hostname()
	content, err := json.Marshal(beaconContent{ID: b.id, Host: host, PID: os.Getpid(),
		Written: time.Now().UTC(), Interval: b.every.String()})
	if err != nil {
		return err
	}
	if err := b.d.PutContent(ctx, b.path(), content); err != nil {
		return fmt.Errorf("write beacon %s: %w", b.path(), err)
	}
	return nil
}

// Run writes the beacon now and then every interval until ctx is done, then
// removes it so that a cleanly stopped server does not block gc. Only an
// invalid id or a failing first write is returned as an error; later write
// failures are logged and retried.
func (b *Beacon) Run(ctx context.Context) error {
	if !beaconID.MatchString(b.id) {
		return fmt.Errorf("beacon id %q: must be letters, digits, '.', '_' or '-'", b.id)
	}
	if err := b.write(ctx); err != nil {
		return err
	}
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := b.d.Delete(dctx, b.path()); err != nil && !isNotFound(err) {
				b.log.Warn("removing beacon", "err", err)
			}
			return nil
		case <-t.C:
			if err := b.write(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("refreshing beacon", "err", err)
			}
		}
	}
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// LiveBeacons returns the ids of servers whose beacon was written less than
// maxAge ago, judged by the storage's modification time.
func LiveBeacons(ctx context.Context, d storagedriver.StorageDriver, maxAge time.Duration) ([]string, error) {
	entries, err := d.List(ctx, BeaconDir)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list server beacons in %s: %w", BeaconDir, err)
	}
	now := time.Now()
	var live []string
	for _, p := range entries {
		fi, err := d.Stat(ctx, p)
		if err != nil {
			if isNotFound(err) {
				continue // removed by a server stopping right now
			}
			return nil, fmt.Errorf("stat server beacon %s: %w", p, err)
		}
		if fi.IsDir() {
			continue
		}
		if now.Sub(fi.ModTime()) < maxAge {
			live = append(live, path.Base(p))
		}
	}
	sort.Strings(live)
	return live, nil
}
