package gc

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/opencontainers/go-digest"
)

// Mark decides what to delete. It is pure: the listing and the policy in,
// the plan out.
//
// Liveness rules, per repository:
//   - a tagged manifest is live;
//   - without DeleteUntagged every manifest is live;
//   - with DeleteUntagged an untagged manifest is live only if it was pushed
//     less than BlobGrace ago, is a child of a live index, or is a referrer
//     (its subject field) of a live manifest. Referrers live and die with
//     their subject: a signature or SBOM stays while its image does and goes
//     with it. Tags of the referrers tag schema ("sha256-<hex>", optionally
//     with a suffix such as cosign's ".sig") count as referrers of the
//     manifest they name, not as tags: the manifest they point at lives
//     while that subject lives, and the tag goes with it. Any other tag
//     keeps a referrer alive on its own;
//   - a manifest whose content cannot be read is kept and reported.
//
// Blobs, across repositories: a blob is kept if a live manifest anywhere
// refers to it (as its own content, config, layer, child or artifact blob),
// if its data was written less than BlobGrace ago, or if any repository
// linked it less than BlobGrace ago (a push whose manifest is still to come).
// A layer link goes when its blob goes, or when it points at a blob that no
// longer exists and nothing live needs it.
func Mark(l *Listing, p Policy) *Plan {
	plan := &Plan{}
	isYoung := func(m Manifest) bool { return p.Now.Sub(m.Linked) < p.BlobGrace }

	liveBlobs := map[digest.Digest]bool{}
	youngLinks := map[digest.Digest]bool{}
	for _, repo := range l.Repositories {
		keep := p.Keep[repo.Name]
		if len(repo.Aliases) > 0 {
			// A manifest pushed by a sha512 name is served from its sha256
			// revision: that revision lives as long as the alias does.
			keep = maps.Clone(keep)
			if keep == nil {
				keep = map[digest.Digest]bool{}
			}
			for _, al := range repo.Aliases {
				keep[al.Target] = true
			}
		}
		live := markRepository(repo, p.DeleteUntagged, isYoung, keep)
		for _, m := range repo.Manifests {
			if m.Broken != "" {
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s@%s: kept, content unusable: %s", repo.Name, m.Digest, m.Broken))
			}
			if !live[m.Digest] {
				plan.Manifests = append(plan.Manifests, ManifestRef{Repository: repo.Name, Digest: m.Digest,
					MediaType: m.MediaType, Subject: m.Subject, Tags: slices.Clone(m.Tags), TagIndex: slices.Clone(m.TagIndex)})
				continue
			}
			plan.ManifestsKept++
			liveBlobs[m.Digest] = true
			for _, d := range m.Blobs {
				liveBlobs[d] = true
			}
			for _, d := range m.Children {
				liveBlobs[d] = true
			}
		}
		for _, ln := range repo.Layers {
			if p.Now.Sub(ln.Modified) < p.BlobGrace {
				youngLinks[ln.Digest] = true
			}
		}
		// Content reached through an alias (a sha512 name) is never
		// collected: the manifests that use such names cannot be read by
		// their alias, so what they refer to is unknown. Keeping it is the
		// safe side; such content is freed when its links are deleted
		// through the API.
		for _, al := range repo.Aliases {
			liveBlobs[al.Target] = true
		}
		for _, u := range repo.Uploads {
			if p.UploadMaxAge > 0 && p.Now.Sub(u.Started) > p.UploadMaxAge {
				plan.Uploads = append(plan.Uploads, UploadRef{Repository: repo.Name, ID: u.ID, Started: u.Started})
			}
		}
	}

	present := make(map[digest.Digest]bool, len(l.Blobs))
	deleting := map[digest.Digest]bool{}
	for _, b := range l.Blobs {
		present[b.Digest] = true
		if liveBlobs[b.Digest] || youngLinks[b.Digest] || p.Now.Sub(b.Modified) < p.BlobGrace {
			plan.BlobsKept++
			continue
		}
		deleting[b.Digest] = true
		plan.Blobs = append(plan.Blobs, b)
		plan.Bytes += b.Size
	}
	for _, repo := range l.Repositories {
		for _, ln := range repo.Layers {
			if liveBlobs[ln.Digest] || p.Now.Sub(ln.Modified) < p.BlobGrace || ln.Digest.Algorithm() != digest.Canonical {
				continue
			}
			if deleting[ln.Digest] || !present[ln.Digest] {
				plan.LayerLinks = append(plan.LayerLinks, LinkRef{Repository: repo.Name, Digest: ln.Digest})
			}
		}
	}

	slices.SortFunc(plan.Manifests, func(a, b ManifestRef) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	slices.SortFunc(plan.LayerLinks, func(a, b LinkRef) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	slices.SortFunc(plan.Blobs, func(a, b Blob) int { return cmp.Compare(a.Digest, b.Digest) })
	slices.SortFunc(plan.Uploads, func(a, b UploadRef) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.ID, b.ID))
	})
	return plan
}

// markRepository returns the live manifests of one repository.
func markRepository(repo Repository, deleteUntagged bool, young func(Manifest) bool, keep map[digest.Digest]bool) map[digest.Digest]bool {
	byDigest := make(map[digest.Digest]*Manifest, len(repo.Manifests))
	referrers := map[digest.Digest][]digest.Digest{}
	for i := range repo.Manifests {
		m := &repo.Manifests[i]
		byDigest[m.Digest] = m
		if m.Subject != "" {
			referrers[m.Subject] = append(referrers[m.Subject], m.Digest)
		}
		for _, tag := range m.Tags {
			if subject, ok := ReferrerTagSubject(tag); ok {
				referrers[subject] = append(referrers[subject], m.Digest)
			}
		}
	}
	live := make(map[digest.Digest]bool, len(repo.Manifests))
	var queue []digest.Digest
	mark := func(d digest.Digest) {
		if _, ok := byDigest[d]; ok && !live[d] {
			live[d] = true
			queue = append(queue, d)
		}
	}
	for _, m := range repo.Manifests {
		if !deleteUntagged || hasPlainTag(m.Tags) || m.Broken != "" || young(m) || keep[m.Digest] {
			mark(m.Digest)
		}
	}
	for len(queue) > 0 {
		d := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for _, c := range byDigest[d].Children {
			mark(c)
		}
		for _, r := range referrers[d] {
			mark(r)
		}
	}
	return live
}

// referrerTag matches the OCI referrers tag schema and cosign's tags:
// "<alg>-<hex>" with an optional ".<suffix>".
var referrerTag = regexp.MustCompile(`^(sha256|sha384|sha512)-([0-9a-f]{64,128})(\.[A-Za-z0-9_.-]+)?$`)

// ReferrerTagSubject returns the manifest a referrer tag names.
func ReferrerTagSubject(tag string) (digest.Digest, bool) {
	m := referrerTag.FindStringSubmatch(tag)
	if m == nil {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(m[1]), m[2])
	return d, d.Validate() == nil
}

func hasPlainTag(tags []string) bool {
	for _, t := range tags {
		if _, ok := ReferrerTagSubject(t); !ok {
			return true
		}
	}
	return false
}
