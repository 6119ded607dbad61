package main

import (
	"context"
	"path/filepath"

	"github.com/berth-registry/berth/bench/internal/servers"
)

// s3Metrics are the workloads also run on S3: the data path, where the
// storage driver does the work. The HEAD storm and RSS are about the
// server, and the filesystem rows show them.
var s3Metrics = []string{mPushBig, mPushSmall, mPullCold, mPullWarm}

// s3Workloads runs push and pull with berth and upstream each on its own
// bucket of one versitygw (a real S3 server on loopback, its objects on the
// run's scratch storage), with the same images and clients as the
// filesystem rows.
func (b *bench) s3Workloads(ctx context.Context) {
	subjects := []string{sBerthS3, sUpstreamS3}
	fail := func(subject string, err error) {
		for _, m := range s3Metrics {
			b.res.Fail(m, subject, err)
		}
	}
	if b.bin.versitygwNA != "" {
		for _, name := range subjects {
			for _, m := range s3Metrics {
				b.res.NA(m, name, b.bin.versitygwNA)
			}
		}
		return
	}
	dir := filepath.Join(b.work, "s3")
	store, err := servers.StartS3(ctx, b.bin.versitygw, filepath.Join(dir, "versitygw"))
	if err != nil {
		b.log.Error("S3 server did not start", "err", err)
		for _, name := range subjects {
			fail(name, err)
		}
		return
	}
	defer store.Kill()
	b.res.Note("S3 rows: %s (posix backend) on loopback storing on %s, one bucket per registry, redirects off (the registry serves every byte); both registries use the s3-aws driver of Distribution %s",
		servers.VersitygwVersion(b.bin.versitygw), describeStorage(b.o.WorkDir), servers.UpstreamVersion)

	specs := []servers.Spec{
		{Name: sBerthS3, Kind: servers.Berth, Binary: b.bin.berth},
		{Name: sUpstreamS3, Kind: servers.Distribution, Binary: b.bin.upstream},
	}
	buckets := map[string]string{sBerthS3: "bench-berth", sUpstreamS3: "bench-upstream"}
	var vs []*variant
	defer func() {
		for _, v := range vs {
			if err := v.srv.Stop(); err != nil {
				b.log.Warn("stop", "server", v.name, "err", err)
			}
		}
	}()
	for _, sp := range specs {
		bucket, err := servers.NewBucket(ctx, store, buckets[sp.Name])
		if err == nil {
			sp.S3 = bucket
			var v *variant
			if v, err = b.startVariant(ctx, sp); err == nil {
				vs = append(vs, v)
				continue
			}
		}
		b.log.Error("server did not start", "server", sp.Name, "err", err)
		fail(sp.Name, err)
	}
	b.pushBig(ctx, vs)
	b.pushSmall(ctx, vs)
	b.pull(ctx, vs)
}
