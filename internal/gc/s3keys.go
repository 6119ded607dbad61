package gc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/endpoints"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// FileDeleter deletes files (never directories) by exact path, many per
// request. Through the StorageDriver interface every deletion on S3 is a
// listing plus a DeleteObjects call for one path; gc knows the exact key of
// every link and blob it collects, so it can send up to 1,000 of them in
// one DeleteObjects request instead.
type FileDeleter interface {
	// DeleteFiles deletes the files at paths (storage paths as the driver
	// names them). A file already missing counts as deleted. failed holds
	// the paths that could not be deleted; err means the request failed as
	// a whole and nothing is known to be deleted.
	DeleteFiles(ctx context.Context, paths []string) (failed map[string]error, err error)
}

// maxDeleteBatch is S3's limit of keys per DeleteObjects request.
const maxDeleteBatch = 1000

// FileDeleterFor returns a batch deleter for the configured storage, or nil
// when the storage has none (gc then deletes path by path through the
// driver). storageType and params are the `storage:` section's driver and
// parameters, the same the driver was opened with.
func FileDeleterFor(storageType string, params map[string]any) (FileDeleter, error) {
	switch storageType {
	case "s3", "s3aws":
		return newS3Deleter(params)
	}
	return nil, nil
}

type s3Deleter struct {
	client *s3.S3
	bucket string
	root   string
}

// newS3Deleter opens an S3 client configured as Distribution's s3-aws
// driver configures its own (same endpoint, region, addressing, TLS and
// credentials, including the default AWS credential chain when no keys are
// given). Signature v2 (v4auth: false) is left to the driver: nil is
// returned and gc deletes through it.
func newS3Deleter(params map[string]any) (FileDeleter, error) {
	str := func(k string) string {
		if v, ok := params[k]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	boolean := func(k string, def bool) (bool, error) {
		switch v := params[k].(type) {
		case nil:
			return def, nil
		case bool:
			return v, nil
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return false, fmt.Errorf("s3 parameter %s: %q is not a boolean", k, v)
			}
			return b, nil
		default:
			return false, fmt.Errorf("s3 parameter %s: %v is not a boolean", k, v)
		}
	}
	var flags = map[string]bool{}
	for k, def := range map[string]bool{"v4auth": true, "secure": true, "forcepathstyle": false, "skipverify": false,
		"usedualstack": false, "usefipsendpoint": false, "accelerate": false} {
		b, err := boolean(k, def)
		if err != nil {
			return nil, err
		}
		flags[k] = b
	}
	if !flags["v4auth"] {
		return nil, nil
	}
	bucket := str("bucket")
	if bucket == "" {
		return nil, errors.New("s3 storage: no bucket parameter")
	}
	cfg := aws.NewConfig().
		// fmt.Sprint as the driver does, even of a missing region: the
		// same configuration must reach the same endpoint.
		WithRegion(fmt.Sprint(params["region"])).
		WithS3ForcePathStyle(flags["forcepathstyle"]).
		WithS3UseAccelerate(flags["accelerate"]).
		WithDisableSSL(!flags["secure"])
	if ep := str("regionendpoint"); ep != "" {
		cfg.WithEndpoint(ep)
	}
	if ak, sk := str("accesskey"), str("secretkey"); ak != "" && sk != "" {
		cfg.WithCredentials(credentials.NewStaticCredentials(ak, sk, str("sessiontoken")))
	}
	if flags["usedualstack"] {
		cfg.UseDualStackEndpoint = endpoints.DualStackEndpointStateEnabled
	}
	if flags["usefipsendpoint"] {
		cfg.UseFIPSEndpoint = endpoints.FIPSEndpointStateEnabled
	}
	if flags["skipverify"] {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator asked for it (skipverify)
		cfg.WithHTTPClient(&http.Client{Transport: tr})
	}
	sess, err := session.NewSession(cfg)
	if err != nil {
		return nil, fmt.Errorf("s3 storage: open a session for batch deletes: %w", err)
	}
	return &s3Deleter{client: s3.New(sess), bucket: bucket, root: str("rootdirectory")}, nil
}

// key maps a storage path to its object key exactly as the s3-aws driver
// does.
func (d *s3Deleter) key(p string) string {
	return strings.TrimLeft(strings.TrimRight(d.root, "/")+p, "/")
}

func (d *s3Deleter) DeleteFiles(ctx context.Context, paths []string) (map[string]error, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	if len(paths) > maxDeleteBatch {
		return nil, fmt.Errorf("%d keys in one delete request; S3 takes at most %d", len(paths), maxDeleteBatch)
	}
	byKey := make(map[string]string, len(paths))
	objs := make([]*s3.ObjectIdentifier, 0, len(paths))
	for _, p := range paths {
		k := d.key(p)
		byKey[k] = p
		objs = append(objs, &s3.ObjectIdentifier{Key: aws.String(k)})
	}
	out, err := d.client.DeleteObjectsWithContext(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(d.bucket),
		Delete: &s3.Delete{Objects: objs, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("delete %d objects: %w", len(paths), err)
	}
	var failed map[string]error
	for _, e := range out.Errors {
		code := aws.StringValue(e.Code)
		if code == "NoSuchKey" {
			continue // already gone: what a rerun after an interruption finds
		}
		p, ok := byKey[aws.StringValue(e.Key)]
		if !ok {
			continue
		}
		if failed == nil {
			failed = map[string]error{}
		}
		failed[p] = fmt.Errorf("%s: %s", code, aws.StringValue(e.Message))
	}
	return failed, nil
}
