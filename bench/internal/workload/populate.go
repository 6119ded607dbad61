package workload

import (
	"context"
	"fmt"
	"net/http"
)

// PruneRepo names the i-th repository of the prune scenario.
func PruneRepo(i int) string { return fmt.Sprintf("prune/app%03d", i) }

// PruneTag names the i-th tag pushed to a repository; names sort in push
// order, which the sequential baseline relies on.
func PruneTag(i int) string { return fmt.Sprintf("t%04d", i) }

// PopulateTags pushes repos × tags tags, each tag on a manifest of its own
// (so deleting by digest removes exactly one tag) sharing one small image's
// blobs per repository. Tags of one repository are pushed one after the
// other, oldest first, so push times order them; repositories go in
// parallel.
func PopulateTags(ctx context.Context, tr http.RoundTripper, host string, seed uint64, repos, tags, workers int) error {
	p, err := Pusher(tr, 4)
	if err != nil {
		return err
	}
	return parallel(ctx, repos, workers, func(ctx context.Context, r int) error {
		repo := PruneRepo(r)
		base, err := Image(seed+uint64(r), []int64{512})
		if err != nil {
			return err
		}
		for i := 0; i < tags; i++ {
			tag := PruneTag(i)
			img, err := Tagged(base, tag)
			if err != nil {
				return err
			}
			ref, err := Ref(host, repo, tag)
			if err != nil {
				return err
			}
			// The first push uploads the shared blobs; the rest only PUT
			// their manifest, which keeps setup at one request per tag.
			if err := PushAll(ctx, p, []Item{{Image: img, To: ref, ManifestOnly: i > 0}}, 1); err != nil {
				return err
			}
		}
		return nil
	})
}

// GCRepo names the i-th repository of the gc scenario.
func GCRepo(i int) string { return fmt.Sprintf("gc/app%02d", i) }

// GCScenario is what PopulateGC left in storage.
type GCScenario struct {
	Kept, Deleted int
	// BlobsAfter is how many blobs a correct gc leaves: each kept image's
	// manifest, config and layer; deleted images' are garbage.
	BlobsAfter int
}

// PopulateGC pushes images single-layer images with blobs of their own over
// repos repositories, then deletes every other one by digest, so that half
// of the manifests and blobs are garbage.
func PopulateGC(ctx context.Context, tr http.RoundTripper, host string, seed uint64, images, repos, layerSize, workers int) (GCScenario, error) {
	p, err := Pusher(tr, 2)
	if err != nil {
		return GCScenario{}, err
	}
	type pushed struct{ repo, digest string }
	done := make([]pushed, images)
	err = parallel(ctx, images, workers, func(ctx context.Context, i int) error {
		img, err := Image(seed+uint64(i), []int64{int64(layerSize)})
		if err != nil {
			return err
		}
		repo := GCRepo(i % repos)
		ref, err := Ref(host, repo, fmt.Sprintf("i%05d", i))
		if err != nil {
			return err
		}
		if err := p.Push(ctx, ref, img); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		done[i] = pushed{repo, d.String()}
		return nil
	})
	if err != nil {
		return GCScenario{}, err
	}
	var sc GCScenario
	var del []pushed
	for i, d := range done {
		if i%2 == 1 {
			del = append(del, d)
		} else {
			sc.Kept++
		}
	}
	err = parallel(ctx, len(del), workers, func(ctx context.Context, i int) error {
		ref, err := Ref(host, del[i].repo, del[i].digest)
		if err != nil {
			return err
		}
		if err := p.Delete(ctx, ref); err != nil {
			return fmt.Errorf("delete %s: %w", ref, err)
		}
		return nil
	})
	if err != nil {
		return GCScenario{}, err
	}
	sc.Deleted = len(del)
	sc.BlobsAfter = 3 * sc.Kept
	return sc, nil
}
