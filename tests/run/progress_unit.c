/* The progress line's time left: from the rate of the steps this process ran, so a stage
 * resumed at step 90 of 100 that took 1 s for 5 steps has 1 s left, not 0.06 s. */
#include <math.h>
#include <stdio.h>

#include "check.h"
#include "stage.h"

int main(void) {
    /* fresh: 10 steps in 2 s, 90 to go */
    CHECK(fabs(progress_time_left(2.0, 0, 10, 100) - 18.0) < 1e-9, "fresh: %g",
          progress_time_left(2.0, 0, 10, 100));
    /* resumed at 90: 5 steps in 1 s, 5 to go */
    CHECK(fabs(progress_time_left(1.0, 90, 95, 100) - 1.0) < 1e-9, "resumed: %g",
          progress_time_left(1.0, 90, 95, 100));
    /* no step yet, and the last step */
    CHECK(progress_time_left(0.5, 90, 90, 100) == 0, "no step done");
    CHECK(progress_time_left(3.0, 0, 100, 100) == 0, "done");
    return check_report("progress_unit");
}
