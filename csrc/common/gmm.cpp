// Validation of gmm_estep's and gmm_mstep's arguments, in words that name the argument, what
// was expected and what was given.
#include <string>
#include <vector>

#include "common/shape.h"
#include "dlkern/error.h"
#include "dlkern/gmm.h"

namespace dlkern {
namespace {

GmmCovariance covariance_of(const std::string& name, const char* op) {
  if (name == "full") return GmmCovariance::full;
  if (name == "tied") return GmmCovariance::tied;
  if (name == "diag") return GmmCovariance::diag;
  if (name == "spherical") return GmmCovariance::spherical;
  throw ValueError(std::string(op) + ": covariance_type must be one of 'full', 'tied', 'diag', "
                   "'spherical', got '" + name + "'");
}

}  // namespace

GmmParams gmm_params(const std::vector<int64_t>& x, const std::vector<int64_t>& weights,
                     const std::vector<int64_t>& means, const std::vector<int64_t>& prec,
                     const std::string& covariance_type) {
  const char* op = "gmm_estep";
  GmmParams p{};
  p.covariance = covariance_of(covariance_type, op);
  DLKERN_CHECK(x.size() == 2, op, ": X must be 2-D (n_samples, n_features), got shape ",
               shape_str(x));
  DLKERN_CHECK(weights.size() == 1 && weights[0] >= 1, op,
               ": weights must be 1-D (n_components,) with n_components >= 1, got shape ",
               shape_str(weights));
  DLKERN_CHECK(x[1] >= 1, op, ": X must have at least one feature, got shape ", shape_str(x));
  p.n_samples = x[0];
  p.n_features = x[1];
  p.n_components = weights[0];
  const int64_t K = p.n_components, D = p.n_features;
  DLKERN_CHECK(means == std::vector<int64_t>({K, D}), op,
               ": means must have shape (n_components, n_features) = ", shape_str({K, D}),
               ", got ", shape_str(means));
  std::vector<int64_t> want;
  switch (p.covariance) {
    case GmmCovariance::full: want = {K, D, D}; break;
    case GmmCovariance::tied: want = {D, D}; break;
    case GmmCovariance::diag: want = {K, D}; break;
    case GmmCovariance::spherical: want = {K}; break;
  }
  DLKERN_CHECK(prec == want, op, ": precisions_cholesky of covariance_type '", covariance_type,
               "' must have shape ", shape_str(want), ", got ", shape_str(prec));
  return p;
}

GmmParams gmm_mstep_params(const std::vector<int64_t>& x, const std::vector<int64_t>& resp,
                           const std::string& covariance_type) {
  const char* op = "gmm_mstep";
  GmmParams p{};
  p.covariance = covariance_of(covariance_type, op);
  DLKERN_CHECK(x.size() == 2 && x[1] >= 1, op,
               ": X must be 2-D (n_samples, n_features) with a feature, got shape ",
               shape_str(x));
  DLKERN_CHECK(resp.size() == 2 && resp[0] == x[0] && resp[1] >= 1, op,
               ": resp must have shape (n_samples, n_components) with n_samples = ", x[0],
               " and n_components >= 1, got ", shape_str(resp));
  p.n_samples = x[0];
  p.n_features = x[1];
  p.n_components = resp[1];
  return p;
}

GmmParams gmm_cholesky_params(const std::vector<int64_t>& cov,
                              const std::string& covariance_type) {
  const char* op = "gmm_precisions_cholesky";
  GmmParams p{};
  p.covariance = covariance_of(covariance_type, op);
  const size_t ndim = p.covariance == GmmCovariance::full        ? 3
                      : p.covariance == GmmCovariance::spherical ? 1
                                                                 : 2;
  const char* want = p.covariance == GmmCovariance::full   ? "(n_components, n_features, n_features)"
                     : p.covariance == GmmCovariance::tied ? "(n_features, n_features)"
                     : p.covariance == GmmCovariance::diag ? "(n_components, n_features)"
                                                           : "(n_components,)";
  bool ok = cov.size() == ndim;
  for (int64_t n : cov) ok = ok && n >= 1;
  if (ok && p.covariance == GmmCovariance::full) ok = cov[1] == cov[2];
  if (ok && p.covariance == GmmCovariance::tied) ok = cov[0] == cov[1];
  DLKERN_CHECK(ok, op, ": covariances of covariance_type '", covariance_type, "' must have shape ",
               want, " with sizes >= 1, got ", shape_str(cov));
  p.n_components = p.covariance == GmmCovariance::tied ? 1 : cov[0];
  p.n_features = p.covariance == GmmCovariance::spherical ? 1 : cov.back();
  return p;
}

}  // namespace dlkern
