//! The median and range of a cell's repeats: one sample says little on a shared, noisy
//! machine, so every cell runs several times and the tables show the median with the
//! smallest and largest value beside it.

/// The median and range of some samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The middle sample (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples there were.
    pub count: usize,
}

impl Spread {
    /// The spread of `samples`, leaving out any that is not a finite number; `None` when
    /// none is left.
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut sorted: Vec<f64> = samples.into_iter().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        let (first, last) = (sorted.first()?, sorted.last()?);
        let middle = count / 2;
        let median = if count % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(Spread {
            median,
            min: *first,
            max: *last,
            count,
        })
    }

    /// `median unit (min-max)`, each number written by `number`: "17.0 ms (16.1-17.8)".
    /// The median alone when there is one sample or all are equal as written.
    pub fn show(&self, number: impl Fn(f64) -> String, unit: &str) -> String {
        let (median, min, max) = (number(self.median), number(self.min), number(self.max));
        if self.count < 2 || min == max {
            format!("{median}{unit}")
        } else {
            format!("{median}{unit} ({min}-{max})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_odd_count_takes_the_middle_sample() {
        let spread = Spread::of([30.0, 10.0, 20.0]).unwrap();
        assert_eq!(spread.median, 20.0);
        assert_eq!((spread.min, spread.max, spread.count), (10.0, 30.0, 3));
    }

    #[test]
    fn an_even_count_takes_the_mean_of_the_middle_two() {
        let spread = Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(spread.median, 2.5);
        assert_eq!((spread.min, spread.max), (1.0, 4.0));
    }

    #[test]
    fn one_sample_is_its_own_median_and_range() {
        let spread = Spread::of([7.0]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (7.0, 7.0, 7.0));
        assert_eq!(spread.show(|x| format!("{x:.0}"), " ms"), "7 ms");
    }

    #[test]
    fn no_samples_and_non_numbers_give_nothing() {
        assert_eq!(Spread::of([]), None);
        assert_eq!(Spread::of([f64::NAN, f64::INFINITY]), None);
        let spread = Spread::of([f64::NAN, 5.0, 1.0, f64::NEG_INFINITY]).unwrap();
        assert_eq!((spread.median, spread.count), (3.0, 2));
    }

    #[test]
    fn it_shows_the_median_then_the_range() {
        let spread = Spread::of([1.5, 1.2, 2.25]).unwrap();
        assert_eq!(spread.show(|x| format!("{x:.2}"), "x"), "1.50x (1.20-2.25)");
        // Equal once rounded: no range to show.
        let spread = Spread::of([1.001, 1.002, 1.003]).unwrap();
        assert_eq!(spread.show(|x| format!("{x:.1}"), ""), "1.0");
    }
}
