#include "unit_test.h"

int main(int argc, char** argv) { return pyserver::testing::RunUnitTests(argc, argv); }
