#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <KokkosKernels_config.h>
#include <Kokkos_Macros.hpp>

#include "core/app.hpp"
#include "core/build_info.hpp"
#include "core/error.hpp"
#include "io/output_directory.hpp"
#include "support.hpp"

using jetmoe::AppSpec;
using jetmoe::parse_command_line;
using Catch::Matchers::Contains;
using Catch::Matchers::EndsWith;
using Catch::Matchers::StartsWith;
using jetmoe::testing::TempDir;

namespace {
const AppSpec train{"jetmoe-train", "Train.", {"job"}, true, ""};
const AppSpec gen{"jetmoe-generate", "Generate.", {"job"}, false, ""};

std::string usage_error(const AppSpec& spec, std::vector<std::string> args) {
  try {
    parse_command_line(args, spec);
  } catch (const jetmoe::Error& e) {
    CHECK(e.exit_code() == 2);
    return e.what();
  }
  FAIL("no usage error");
  return "";
}
}  // namespace

TEST_CASE("command line: deck, restart, overrides; Kokkos flags skipped", "[unit][app]") {
  const auto cl = parse_command_line({"--kokkos-num-threads=2", "-i", "a.deck", "optimizer/lr=1e-3", "-r", "c.h5",
                                      "--kokkos-threads=2", "job/name=x=y", "--check"},
                                     train);
  CHECK(*cl.deck_path == "a.deck");
  CHECK(*cl.restart == "c.h5");
  CHECK(cl.overrides == std::vector<std::string>{"optimizer/lr=1e-3", "job/name=x=y"});
  CHECK(cl.check_only);
  CHECK_FALSE(cl.help);
  const auto long_form = parse_command_line({"--input=b.deck", "--restart=d.h5"}, train);
  CHECK(*long_form.deck_path == "b.deck");
  CHECK(*long_form.restart == "d.h5");
  CHECK(parse_command_line({"--help"}, gen).help);
  CHECK(parse_command_line({"-V"}, gen).version);
}

TEST_CASE("command line errors are usage errors", "[unit][app]") {
  CHECK_THAT(usage_error(train, {"--bogus"}), Contains("unknown argument '--bogus'"));
  CHECK_THAT(usage_error(train, {"lr=3"}), Contains("deck overrides are written block/key=value"));
  CHECK_THAT(usage_error(train, {"-i"}), Contains("option -i needs a value"));
  CHECK_THAT(usage_error(train, {"-i", "a", "-i", "b"}), Contains("more than one input deck"));
  CHECK_THAT(usage_error(gen, {"-r", "x.h5"}), Contains("jetmoe-generate does not restart"));
}

TEST_CASE("usage text lists options and deck blocks", "[unit][app]") {
  const std::string u = jetmoe::usage_text(train);
  CHECK_THAT(u, Contains("Usage: jetmoe-train -i DECK [-r CHECKPOINT]"));
  CHECK_THAT(u, Contains("Deck blocks read: <job>"));
  CHECK_THAT(jetmoe::usage_text(gen), !Contains("--restart"));
}

// ---- output directories (src/io/output_directory.hpp) and escaped file-system errors --------------

TEST_CASE("an output directory that fails is taken away, one that exists is never", "[unit][app]") {
  namespace fs = std::filesystem;
  TempDir tmp;
  const std::string too_long(300, 'n');  // beyond NAME_MAX (255) on every Linux file system
  // Fails at the third level: the two levels it made are removed, the temporary directory stays.
  try {
    jetmoe::io::OutputDirectory dir(tmp.path / "a" / "b" / too_long / "c", "<eval>/output");
    FAIL("no error");
  } catch (const jetmoe::Error& e) {
    CHECK(e.kind() == jetmoe::ErrorKind::Input);
    CHECK_THAT(e.what(), StartsWith("<eval>/output: cannot create the directory '" + (tmp / "a") + "/b/nnn"));
    CHECK_THAT(e.what(), EndsWith("/c': File name too long"));
  }
  CHECK(fs::is_directory(tmp.path));
  CHECK_FALSE(fs::exists(tmp.path / "a"));

  // Made, then given up: removed deepest first, but only while empty.
  {
    jetmoe::io::OutputDirectory dir(tmp.path / "x" / "y" / "z", "key");
    REQUIRE(dir.made().size() == 3);
    CHECK(dir.made().front() == tmp.path / "x");
    std::ofstream(tmp.path / "x" / "keep.txt") << "a file a run wrote";
  }
  CHECK_FALSE(fs::exists(tmp.path / "x" / "y"));
  CHECK(fs::exists(tmp.path / "x" / "keep.txt"));

  // Kept, and a directory that existed before ("x", "x/") is not recorded.
  {
    jetmoe::io::OutputDirectory dir(tmp.path / "x" / "q" / "", "key");
    CHECK(dir.made() == std::vector<fs::path>{tmp.path / "x" / "q"});
    dir.keep();
  }
  CHECK(fs::is_directory(tmp.path / "x" / "q"));
  { jetmoe::io::OutputDirectory existing(tmp.path / "x", "key"); CHECK(existing.made().empty()); }
  CHECK(fs::is_directory(tmp.path / "x"));

  // A file where the directory goes.
  try {
    jetmoe::io::OutputDirectory dir(tmp.path / "x" / "keep.txt" / "d", "<job>/output_dir");
    FAIL("no error");
  } catch (const jetmoe::Error& e) {
    CHECK_THAT(e.what(), EndsWith("/x/keep.txt/d': Not a directory"));
  }
  CHECK(fs::is_regular_file(tmp.path / "x" / "keep.txt"));
}

TEST_CASE("exists_or_fail: missing is false, refused is an error naming the path", "[unit][app]") {
  TempDir tmp;
  CHECK(jetmoe::io::exists_or_fail(tmp.path, "k"));
  CHECK_FALSE(jetmoe::io::exists_or_fail(tmp.path / "missing", "k"));
  std::ofstream(tmp.path / "file") << "x";
  CHECK_FALSE(jetmoe::io::exists_or_fail(tmp.path / "file" / "below", "k"));  // ENOTDIR: nothing there
  try {
    jetmoe::io::exists_or_fail(tmp.path / std::string(300, 'n'), "<convert>/output");
    FAIL("no error");
  } catch (const jetmoe::Error& e) {
    CHECK_THAT(e.what(), StartsWith("<convert>/output: cannot access '" + tmp.path.string() + "/nnn"));
    CHECK_THAT(e.what(), EndsWith("': File name too long"));
  }
}

TEST_CASE("a file-system exception that escapes is shown with its path, anything else as a bug", "[unit][app]") {
  namespace fs = std::filesystem;
  const std::string too_long(300, 'n');
  try {
    fs::create_directories(fs::path("out") / too_long);
    FAIL("no exception");
  } catch (const std::exception& e) {
    CHECK(jetmoe::describe_unexpected(e) == "'out/" + too_long + "': File name too long");
  }
  const fs::filesystem_error two("rename", "a\nb", "c", std::make_error_code(std::errc::permission_denied));
  CHECK(jetmoe::describe_unexpected(two) == "'a\\nb' and 'c': Permission denied");
  CHECK(jetmoe::describe_unexpected(std::out_of_range("vector")) == "unexpected failure: vector");
}

TEST_CASE("the host BLAS is described as the library reports it, thread count included", "[unit][app]") {
  // OpenBLAS (the registries' BLAS): the thread count follows openblas_set_num_threads, and the
  // description of the matrix products carries it (it changes the last bits of OpenBLAS's GEMMs).
  using SetThreads = void (*)(int);
  using GetThreads = int (*)();
  const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  const auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  const jetmoe::HostBlas now = jetmoe::host_blas();
  if (!set || !get) {  // another BLAS: named, whatever it says of its threads
    CHECK_FALSE(now.library.empty());
    CHECK(now.library != "OpenBLAS");
    return;
  }
  const int before = get();
  for (const int n : {1, 2}) {
    set(n);
    const jetmoe::HostBlas b = jetmoe::host_blas();
    CHECK(b.library == "OpenBLAS");
    CHECK_THAT(b.config, StartsWith("OpenBLAS " + b.version + " "));
    CHECK_FALSE(b.core.empty());
    CHECK(b.threads == n);
    CHECK(b.describe() == "OpenBLAS " + b.version + " (core " + b.core + ", " + (n == 1 ? "1 thread" : "2 threads") + ")");
#if defined(KOKKOSKERNELS_ENABLE_TPL_BLAS) && !defined(KOKKOS_ENABLE_CUDA)
    CHECK(jetmoe::matrix_products_description() == "host BLAS " + b.describe());
#endif
  }
  set(before);
}
